"""Workflows: versioned definitions (built-in and published), parameter validation, presets, the CLI."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.cli import app as cli_app
from imagen.kit.errors import NotFound, Unprocessable
from imagen.workflows.library import (
    PIPELINE_PARAMETERS,
    SCHEDULERS,
    InvalidDefinition,
    Workflow,
    library,
)
from imagen.workflows.service import preset_service
from tests.conftest import signup

BUILTINS = {"txt2img", "img2img", "inpaint", "hires_fix"}
COMMON = ["prompt", "negative_prompt", "checkpoint", "loras", "scheduler", "steps", "guidance", "seed",
          "batch_size", "width", "height"]
EXTRA = {"txt2img": [], "img2img": ["init_image", "strength"], "inpaint": ["init_image", "mask_image", "strength"],
         "hires_fix": ["hires_scale", "hires_steps", "hires_strength"]}


def definition(base: str = "txt2img", **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(library.get(base).definition())
    data.update(changes)
    return data


def param(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in data["parameters"] if p["name"] == name)


def problems_of(data: Any) -> list[dict[str, Any]]:
    with pytest.raises(InvalidDefinition) as caught:
        Workflow.from_definition(data)
    return caught.value.problems


def make_admin(client: TestClient, email: str = "root@example.com") -> TestClient:
    signup(client, email)
    with client.app.state.services.db.transaction() as s:
        s.execute(update(User).where(User.email == email).values(role="admin"))
    return client


# ---- definitions ----

def test_every_builtin_version_loads_and_the_latest_are_version_3():
    assert {(w.name, w.version) for w in library.all()} == {
        ("txt2img", 1), ("img2img", 1), ("txt2img", 2), ("img2img", 2), ("inpaint", 2), ("hires_fix", 2),
        ("txt2img", 3), ("img2img", 3), ("inpaint", 3), ("hires_fix", 3)}
    for wf in library.list():
        assert wf.version == 3 and wf.pipeline == wf.name and wf.families == ["sd15", "sdxl"]
        assert sorted(p.name for p in wf.parameters) == sorted(COMMON + EXTRA[wf.name])
        images = {name: "aGk=" for name in ("init_image", "mask_image") if name in EXTRA[wf.name]}
        assert wf.validate_params({"prompt": "x", **images})["prompt"] == "x"
    v1 = library.get("txt2img", 1)
    assert v1.families == ["sd15"] and v1.parameter("loras").max_length == 0
    with pytest.raises(ValidationError):  # version 1 takes no LoRAs, as it never did
        v1.validate_params({"prompt": "x", "loras": [{"id": "a", "weight": 1}]})
    moved = ("checkpoint", "width", "height")
    for wf in library.list():  # version 3 moved to the demo model and its native size; version 2 kept its own
        v2 = {p.name: p.default for p in library.get(wf.name, 2).parameters}
        v3 = {p.name: p.default for p in wf.parameters}
        assert tuple(v2[k] for k in moved) == ("imagen-tiny", 512, 512)
        assert tuple(v3[k] for k in moved) == ("imagen-demo", 64, 64)
        assert {k: v for k, v in v2.items() if k not in moved} == {k: v for k, v in v3.items() if k not in moved}


def test_defaults_fill_and_hires_fix_has_its_own_bounds():
    clean = library.get("txt2img").validate_params({"prompt": "a (red:1.3) fox", "loras": [{"id": "abc"}]})
    assert clean["loras"] == [{"id": "abc", "weight": 1.0}] and clean["scheduler"] == "euler"
    assert clean["checkpoint"] == "imagen-demo" and clean["steps"] == 20 and clean["seed"] == -1
    hires = library.get("hires_fix")
    assert {p.name: p.default for p in hires.parameters if p.name.startswith("hires_")} == {
        "hires_scale": 1.5, "hires_steps": 10, "hires_strength": 0.5}
    scale = hires.parameter("hires_scale")
    assert (scale.minimum, scale.maximum) == (1.0, 2.0)


@pytest.mark.parametrize(("params", "loc"), [
    ({"loras": [{"id": "a", "weight": 4.5}]}, ("loras", 0, "weight")),
    ({"loras": [{"id": "a", "weight": float("nan")}]}, ("loras", 0, "weight")),
    ({"loras": [{"id": "", "weight": 1}]}, ("loras", 0, "id")),
    ({"loras": [{"id": "a", "weight": 1, "strength": 2}]}, ("loras", 0, "strength")),
    ({"loras": [{"id": f"l{i}", "weight": 1} for i in range(9)]}, ("loras",)),
    ({"loras": "a"}, ("loras",)),
    ({"scheduler": "karras_magic"}, ("scheduler",)),
    ({"steps": 2.5}, ("steps",)),
    ({"width": 100}, ("width",)),
    ({"shiny": True}, ("shiny",)),
])
def test_bad_params_are_refused_naming_the_field(params, loc):
    with pytest.raises(ValidationError) as caught:
        library.get("txt2img").validate_params({"prompt": "x", **params})
    assert [e["loc"] for e in caught.value.errors()] == [loc]


def test_image_params_must_be_present_and_non_empty():
    inpaint = library.get("inpaint")
    with pytest.raises(ValidationError) as caught:
        inpaint.validate_params({"prompt": "x", "init_image": "", "strength": 0.5})
    assert {e["loc"] for e in caught.value.errors()} == {("init_image",), ("mask_image",)}
    assert inpaint.validate_params({"prompt": "x", "init_image": "asset:abc",
                                    "mask_image": "data:image/png;base64,aGk="})["mask_image"].startswith("data:")


def test_every_scheduler_is_offered_with_its_a1111_label():
    scheduler = library.get("txt2img").parameter("scheduler")
    assert scheduler.choices == list(SCHEDULERS) == [
        "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "lcm"]
    assert scheduler.choice_labels == ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC", "LCM"]


@pytest.mark.parametrize("pipeline", ["img2img", "inpaint", "hires_fix"])
def test_a_definition_missing_what_its_pipeline_needs_is_refused(pipeline):
    problems = problems_of(definition("txt2img", pipeline=pipeline))
    missing = {p["msg"].split("'")[1] for p in problems if p["loc"] == ["parameters"]}
    assert missing == set(EXTRA[pipeline]) == set(PIPELINE_PARAMETERS[pipeline]) - set(COMMON)
    assert all("needs a parameter" in p["msg"] for p in problems)


def test_definition_refusals_say_where_and_why():
    data = definition()
    index = {p["name"]: i for i, p in enumerate(data["parameters"])}
    param(data, "steps")["default"] = 0
    param(data, "scheduler")["default"] = "heun"
    param(data, "guidance")["type"] = "integer"
    param(data, "width")["multiple_of"] = 3
    param(data, "seed")["maximum"] = 2**40
    data["parameters"].append({"name": "prompt", "type": "string", "default": ""})
    data["parameters"].append({"name": "clip_skip", "type": "integer", "default": 1})
    data["families"] = ["sd15", "sd15"]
    got = {tuple(p["loc"]): p["msg"] for p in problems_of(data)}
    assert got[("parameters", index["steps"], "default")].startswith("steps: default 0 is not valid")
    assert "greater than or equal to 1" in got[("parameters", index["steps"], "default")]
    assert got[("parameters", index["scheduler"], "default")].startswith("scheduler: default 'heun'")
    assert "needs type 'number', not 'integer'" in got[("parameters", index["guidance"], "type")]
    assert "multiple of 8" in got[("parameters", index["width"], "multiple_of")]
    assert "at most 4294967295" in got[("parameters", index["seed"], "maximum")]
    assert "duplicate parameter name 'prompt'" in got[("parameters", len(index), "name")]
    assert "does not use a parameter 'clip_skip'" in got[("parameters", len(index) + 1, "name")]
    assert ("families",) in got


@pytest.mark.parametrize(("change", "loc"), [
    ({"pipeline": "outpaint"}, ["pipeline"]),
    ({"families": ["sd3"]}, ["families", 0]),
    ({"version": 0}, ["version"]),
    ({"name": "Bad Name"}, ["name"]),
    ({"extra": 1}, ["extra"]),
])
def test_structural_refusals_name_the_field(change, loc):
    assert [p["loc"] for p in problems_of(definition(**change))] == [loc]


def test_parameter_declarations_must_be_consistent():
    data = definition()
    param(data, "scheduler")["choice_labels"] = ["Euler"]
    param(data, "prompt")["minimum"] = 1
    param(data, "loras")["max_length"] = 9
    param(data, "negative_prompt").pop("default")
    msgs = [p["msg"] for p in problems_of(data)]
    assert any("one label per choice" in m for m in msgs)
    assert any("only integer and number parameters take minimum" in m for m in msgs)
    assert any("at most 8 LoRAs" in m for m in msgs)
    assert any(m.startswith("negative_prompt: needs a default") for m in msgs)
    with pytest.raises(ValidationError):  # the model itself refuses too, not only from_definition
        Workflow.model_validate(data)


# ---- the API ----

def test_builtins_are_listed_with_their_schema(user_client):
    r = user_client.get("/api/v1/workflows")
    assert r.status_code == 200
    by_name = {w["name"]: w for w in r.json()}
    assert set(by_name) == BUILTINS
    for name, wf in by_name.items():
        assert (wf["version"], wf["pipeline"], wf["families"]) == (3, name, ["sd15", "sdxl"])
        params = {p["name"]: p for p in wf["parameters"]}
        assert params["loras"]["type"] == "loras" and params["loras"]["default"] == []
        assert params["loras"]["max_length"] == 8
        assert params["scheduler"]["choices"] == list(SCHEDULERS)
        assert params["checkpoint"]["default"] == "imagen-demo"
        assert "(word:1.3)" in params["prompt"]["description"]
        for image in ("init_image", "mask_image"):
            if image in EXTRA[name]:
                assert params[image]["required"] is True and params[image]["type"] == "image"
    one = user_client.get("/api/v1/workflows/inpaint").json()
    assert one == by_name["inpaint"]
    old = user_client.get("/api/v1/workflows/txt2img/versions/1").json()
    assert old["version"] == 1 and old["families"] == ["sd15"]
    assert user_client.get("/api/v1/workflows/nope").status_code == 404
    assert user_client.get("/api/v1/workflows/txt2img/versions/99").status_code == 404


def test_workflows_need_a_login(client):
    assert client.get("/api/v1/workflows").status_code == 401


def test_admin_publishes_a_new_version_and_old_ones_still_resolve(client, new_client):
    admin = make_admin(client)
    v4 = definition(version=4, title="Text to image (30 steps)")
    param(v4, "steps")["default"] = 30
    r = admin.post("/api/v1/workflows", json=v4)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 4

    user = new_client()
    signup(user, "bob@example.com")
    listed = {w["name"]: w for w in user.get("/api/v1/workflows").json()}
    assert listed["txt2img"]["version"] == 4 and listed["txt2img"]["title"] == "Text to image (30 steps)"
    assert listed["img2img"]["version"] == 3
    assert user.get("/api/v1/workflows/txt2img").json()["version"] == 4
    v3 = user.get("/api/v1/workflows/txt2img/versions/3").json()
    assert v3["version"] == 3 and param(v3, "steps")["default"] == 20
    assert param(user.get("/api/v1/workflows/txt2img/versions/4").json(), "steps")["default"] == 30

    for version in (4, 3):
        again = admin.post("/api/v1/workflows", json=definition(version=version))
        assert again.status_code == 409 and "already at version 4" in again.json()["detail"]
    assert admin.post("/api/v1/workflows", json=definition("img2img", version=3)).status_code == 409

    portrait = admin.post("/api/v1/workflows", json=definition("hires_fix", name="portrait", version=1))
    assert portrait.status_code == 201
    assert {w["name"]: w["pipeline"] for w in user.get("/api/v1/workflows").json()}["portrait"] == "hires_fix"

    assert user.post("/api/v1/workflows", json=definition(version=9)).status_code == 403
    assert user.get("/api/v1/workflows/txt2img").json()["version"] == 4


def test_publishing_an_invalid_definition_lists_each_problem(client):
    admin = make_admin(client)
    bad = definition(version=4, pipeline="img2img")
    param(bad, "steps")["maximum"] = 10
    r = admin.post("/api/v1/workflows", json=bad)
    assert r.status_code == 422
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    steps = next(i for i, p in enumerate(bad["parameters"]) if p["name"] == "steps")
    assert ("body", "parameters", steps, "default") in locs
    assert locs.count(("body", "parameters")) == 2  # init_image and strength are missing
    assert admin.get("/api/v1/workflows/txt2img").json()["version"] == 3  # nothing was stored


# ---- presets ----

def test_presets_create_list_get_delete(user_client):
    body = {"name": "  Fast draft ", "workflow": "txt2img", "params": {
        "steps": 8, "scheduler": "lcm", "guidance": 2, "loras": [{"id": "abc", "weight": 0.5}]}}
    r = user_client.post("/api/v1/presets", json=body)
    assert r.status_code == 201, r.text
    preset = r.json()
    assert preset["name"] == "Fast draft" and preset["workflow"] == "txt2img"
    assert preset["params"] == {"steps": 8, "scheduler": "lcm", "guidance": 2.0,
                                "loras": [{"id": "abc", "weight": 0.5}]}
    other = user_client.post("/api/v1/presets", json={"name": "Another", "workflow": "img2img",
                                                      "params": {"strength": 0.3}}).json()
    assert [p["name"] for p in user_client.get("/api/v1/presets").json()] == ["Another", "Fast draft"]
    assert user_client.get(f"/api/v1/presets/{preset['id']}").json() == preset
    dup = user_client.post("/api/v1/presets", json={**body, "name": "Fast draft"})
    assert dup.status_code == 409
    assert user_client.delete(f"/api/v1/presets/{preset['id']}").status_code == 204
    assert user_client.get(f"/api/v1/presets/{preset['id']}").status_code == 404
    assert [p["id"] for p in user_client.get("/api/v1/presets").json()] == [other["id"]]


@pytest.mark.parametrize(("body", "loc"), [
    ({"params": {"shiny": True}}, ["body", "params", "shiny"]),
    ({"params": {"steps": 0}}, ["body", "params", "steps"]),
    ({"params": {"loras": [{"id": "a", "weight": -5}]}}, ["body", "params", "loras", 0, "weight"]),
    ({"params": {"scheduler": "heun"}}, ["body", "params", "scheduler"]),
    ({"workflow": "nope"}, ["body", "workflow"]),
    ({"workflow": "img2img", "params": {"init_image": "aGk="}}, ["body", "params", "init_image"]),
    ({"name": "   "}, ["body", "name"]),
])
def test_preset_params_are_checked_against_the_workflow(user_client, body, loc):
    r = user_client.post("/api/v1/presets", json={"name": "p", "workflow": "txt2img", **body})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [loc]


def test_presets_are_private(user_client, new_client):
    mine = user_client.post("/api/v1/presets", json={"name": "mine", "workflow": "txt2img",
                                                     "params": {"steps": 5}}).json()
    other = new_client()
    signup(other, "eve@example.com")
    assert other.get(f"/api/v1/presets/{mine['id']}").status_code == 404
    assert other.delete(f"/api/v1/presets/{mine['id']}").status_code == 404
    assert other.get("/api/v1/presets").json() == []
    same_name = other.post("/api/v1/presets", json={"name": "mine", "workflow": "txt2img", "params": {}})
    assert same_name.status_code == 201
    assert user_client.get(f"/api/v1/presets/{mine['id']}").status_code == 200


def test_apply_merges_the_request_over_the_preset(client, new_client):
    owner = signup(client)["account"]["id"]
    preset = client.post("/api/v1/presets", json={"name": "look", "workflow": "txt2img", "params": {
        "steps": 8, "negative_prompt": "blurry", "scheduler": "lcm"}}).json()
    stranger = new_client()
    stranger_id = signup(stranger, "eve@example.com")["account"]["id"]
    with client.app.state.services.db.transaction() as s:
        user = s.get(User, owner)
        merged = preset_service.apply(s, user=user, preset_id=preset["id"], workflow_name="txt2img",
                                      params={"prompt": "a fox", "steps": 12})
        assert merged == {"steps": 12, "negative_prompt": "blurry", "scheduler": "lcm", "prompt": "a fox"}
        assert library.get("txt2img").validate_params(merged)["steps"] == 12
        with pytest.raises(Unprocessable) as caught:
            preset_service.apply(s, user=user, preset_id=preset["id"], workflow_name="img2img", params={})
        assert caught.value.detail[0]["loc"] == ["body", "preset"]
        with pytest.raises(NotFound):
            preset_service.apply(s, user=s.get(User, stranger_id), preset_id=preset["id"],
                                 workflow_name="txt2img", params={})


# ---- the CLI ----

def test_cli_list_show_validate_publish(cli_env):
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["workflows", "list"])
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if any(f" {n} " in line for n in BUILTINS)]
    assert len(rows) == 4 and all(" 3 " in r and "builtin" in r and "sd15, sdxl" in r for r in rows)

    shown = runner.invoke(cli_app, ["workflows", "show", "hires_fix"])
    assert shown.exit_code == 0, shown.output
    assert Workflow.from_definition(json.loads(shown.output)).definition() == library.get("hires_fix").definition()
    old = runner.invoke(cli_app, ["workflows", "show", "img2img", "--version", "1"])
    assert json.loads(old.output)["version"] == 1
    missing = runner.invoke(cli_app, ["workflows", "show", "txt2img", "--version", "7"])
    assert missing.exit_code == 1 and "no version 7" in missing.output

    good = cli_env / "good.json"
    good.write_text(json.dumps(definition(version=4)))
    ok = runner.invoke(cli_app, ["workflows", "validate", str(good)])
    assert ok.exit_code == 0 and "valid: txt2img v4 (txt2img)" in ok.output

    bad_def = definition(pipeline="inpaint")
    param(bad_def, "guidance")["default"] = 99
    bad = cli_env / "bad.json"
    bad.write_text(json.dumps(bad_def))
    refused = runner.invoke(cli_app, ["workflows", "validate", str(bad)])
    assert refused.exit_code == 1
    assert "4 problems" in refused.output
    for expected in ("needs a parameter 'init_image'", "needs a parameter 'mask_image'",
                     "needs a parameter 'strength'", "guidance: default 99"):
        assert expected in refused.output
    broken = cli_env / "broken.json"
    broken.write_text("{not json")
    assert runner.invoke(cli_app, ["workflows", "validate", str(broken)]).exit_code == 1

    published = runner.invoke(cli_app, ["workflows", "publish", str(good)])
    assert published.exit_code == 0 and "published: txt2img v4" in published.output
    again = runner.invoke(cli_app, ["workflows", "publish", str(good)])
    assert again.exit_code == 1 and "already at version 4" in again.output
    assert runner.invoke(cli_app, ["workflows", "publish", str(bad)]).exit_code == 1
    listed = runner.invoke(cli_app, ["workflows", "list"]).output
    txt = next(line for line in listed.splitlines() if " txt2img " in line)
    assert " 4 " in txt and "published" in txt
    assert json.loads(runner.invoke(cli_app, ["workflows", "show", "txt2img", "--version", "2"]).output)[
        "version"] == 2
