"""What leaves the insights store (issue 16): only groups of at least IMAGEN_INSIGHTS_MIN_GROUP, in every output
(the API, the /admin/insights page, the CSV), with optional Laplace noise on counts; topics only as built-in
phrases; admins only."""

from __future__ import annotations

import csv
import io
import random
from datetime import timedelta

import pytest

from imagen.accounts.service import account_service
from imagen.insights.embedding import EXAMPLE_PHRASES, embed
from imagen.insights.models import InsightRecord
from imagen.insights.pages import charts
from imagen.insights.service import Release, Report
from imagen.kit.db import utcnow
from tests.conftest import signup

SMALL = 19  # one short of the default threshold (20)


def as_admin(client, app, email: str = "root@example.com"):
    signup(client, email)
    with app.state.services.db.transaction() as s:
        account_service.get_by_email(s, email).role = "admin"
    return client


def rows(n: int, **fields) -> list[InsightRecord]:
    base = dict(day=utcnow().date(), status="succeeded", workflow="txt2img", workflow_version=2, pipeline="txt2img",
                model_family="sd15", checkpoint_source="builtin", lora_count=0, sampler="euler", steps=20,
                guidance=7.0, width=512, height=512, batch_size=1, queue_wait_seconds=1.0, inference_seconds=2.0)
    return [InsightRecord(**{**base, **fields, "queue_wait_seconds": fields.get("queue_wait_seconds", 0.5 + i),
                             "inference_seconds": fields.get("inference_seconds", 1.0 + i)}) for i in range(n)]


def seed(app) -> None:
    yesterday = utcnow().date() - timedelta(days=1)
    with app.state.services.db.transaction() as s:
        s.add_all(rows(20))  # the released groups: txt2img today, sd15, euler, 512x512
        s.add_all(rows(20, status="failed", failure_reason="timeout"))
        # Groups of 19 in every dimension: never shown anywhere.
        s.add_all(rows(SMALL, day=yesterday, workflow="inpaint", model_family="sdxl", sampler="dpmpp_2m_karras",
                       width=832, height=1216, status="failed", failure_reason="model_load"))


def test_groups_under_the_threshold_are_left_out_of_the_api_the_page_and_the_csv(client, app):
    seed(app)
    admin = as_admin(client, app)
    today = utcnow().date().isoformat()
    body = admin.get("/api/v1/admin/insights").json()
    assert body["min_group"] == 20 and body["epsilon"] is None
    assert body["per_day"] == [{"day": today, "workflow": "txt2img", "count": 40}]
    assert body["samplers"] == [{"sampler": "euler", "count": 40}]
    assert body["sizes"] == [{"size": "512x512", "count": 40}]
    assert body["failures"] == [{"reason": "timeout", "count": 20}]
    assert [t["family"] for t in body["timings"]] == ["sd15"]
    assert body["timings"][0]["queue_wait_p50"] == pytest.approx(10.0) and body["timings"][0]["count"] == 40
    assert body["busy"] == [] and body["topics"] == []  # no generations ran; no embeddings

    page = admin.get("/admin/insights")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    export = admin.get("/api/v1/admin/insights.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(export.text)))
    assert lines[0] == ["chart", "group", "measure", "value"]
    assert ["generations_per_day", f"{today} txt2img", "count", "40"] in lines
    assert ["failures", "timeout", "count", "20"] in lines
    charts_html = page.text.split("<h1>Insights</h1>", 1)[1]
    for hidden in ("inpaint", "sdxl", "dpmpp_2m_karras", "832x1216", "model_load"):
        assert hidden not in charts_html and hidden not in export.text and hidden not in repr(body), hidden
    assert SMALL not in _counts(body)
    assert not [line for line in lines if line[2] == "count" and line[3] == str(SMALL)]
    for chart_id in ("chart-per-day", "chart-queue-wait", "chart-inference", "chart-samplers", "chart-sizes",
                     "chart-failures", "chart-busy", "chart-topics"):
        assert f'id="{chart_id}"' in page.text


def _counts(body: dict) -> list[int]:
    return [item["count"] for key in ("per_day", "samplers", "sizes", "failures", "topics") for item in body[key]]


def test_the_threshold_is_the_setting_and_only_admins_see_anything(client, new_client, app, settings):
    seed(app)
    settings.insights_min_group = 41
    admin = as_admin(client, app)
    body = admin.get("/api/v1/admin/insights").json()
    assert body["min_group"] == 41 and _counts(body) == [] and body["timings"] == []
    assert "No group large enough to show yet" in admin.get("/admin/insights").text
    assert admin.get("/api/v1/admin/insights.csv").text == "chart,group,measure,value\n"
    user = new_client()
    signup(user, "user@example.com")
    assert user.get("/api/v1/admin/insights").status_code == 403
    assert user.get("/api/v1/admin/insights.csv").status_code == 403
    assert user.get("/admin/insights").status_code == 404
    assert new_client().get("/api/v1/admin/insights").status_code == 401
    assert new_client().get("/admin/insights", follow_redirects=False).headers["location"] == "/login"
    assert admin.get("/api/v1/admin/insights", params={"days": 0}).status_code == 422


def test_topics_are_clusters_shown_as_built_in_phrases_never_prompts(client, app):
    prompts = [f"my secret fluffy cat called whiskerbottom {i}" for i in range(25)] + \
              [f"snowy mountains over a glacier lake near zzyzx {i}" for i in range(25)] + \
              [f"rare odd prompt quixotic {i}" for i in range(3)]
    with app.state.services.db.transaction() as s:
        s.add_all(r for p in prompts for r in rows(1, embedding=embed(p)))
    admin = as_admin(client, app)
    body = admin.get("/api/v1/admin/insights").json()
    topics = body["topics"]
    assert topics and all(t["count"] >= 20 for t in topics)
    phrases = {part for t in topics for part in t["topic"].split(" / ")}
    assert phrases <= set(EXAMPLE_PHRASES) and "cat" in phrases
    everything = repr(body) + admin.get("/admin/insights").text + admin.get("/api/v1/admin/insights.csv").text
    for word in ("whiskerbottom", "zzyzx", "quixotic", "secret", "glacier"):
        assert word not in everything


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_laplace_noise_on_counts_is_unbiased_bounded_below_and_off_by_default(database_url):
    exact = Release(20, 0.0, random.Random(1))
    assert [exact.noisy(25) for _ in range(5)] == [25] * 5
    noisy = Release(20, 0.5, random.Random(7))
    draws = [noisy.noisy(25) for _ in range(4000)]
    assert len(set(draws)) > 5 and min(draws) >= 0
    assert abs(sum(draws) / len(draws) - 25) < 0.5  # scale 1/epsilon = 2: the mean stays the count
    spread = sum(abs(d - 25) for d in draws) / len(draws)
    assert 1.5 < spread < 2.5  # Laplace(b): mean absolute deviation b = 2
    assert Release(20, 0.5, random.Random(3)).counts({"a": 19, "b": 20}) != [] and \
        [k for k, _ in Release(20, 0.5, random.Random(3)).counts({"a": 19, "b": 20})] == ["b"]
    assert max(Release(20, 50.0, random.Random(5)).noisy(0) for _ in range(100)) <= 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_chart_escapes_its_labels(database_url):
    report = Report(min_group=20, epsilon=0.0, days=30, rows=40,
                    samplers=[("<script>x</script>", 40)], sizes=[("512x512", 40)])
    svgs = {chart_id: str(svg) for chart_id, _, svg in charts(report)}
    assert "<script>" not in svgs["chart-samplers"] and "&lt;script&gt;" in svgs["chart-samplers"]
    assert svgs["chart-samplers"].count('class="bar"') == 1 and "No group large enough" in svgs["chart-failures"]
