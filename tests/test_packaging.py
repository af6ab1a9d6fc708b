"""What the package ships and pulls in: the CLIP vocabulary is its own file, importing the runtime drags in no
torchvision, and the deploy files name only real commands and settings."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from imagen.cli import app as cli_app
from imagen.inference import clip_tokenizer as clip_tokenizer_module
from imagen.inference.spec import ModelLoadError
from imagen.kit.config import Settings
from imagen.kit.tasks import DEFAULT_QUEUE, GPU_QUEUE

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


# ---------------------------------------------------------------------------------------------------------------
# The CLIP vocabulary


def test_clip_vocabulary_ships_in_the_package_with_its_licence() -> None:
    vocab = resources.files("imagen.inference.vocab")
    data = vocab.joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() == VOCAB_SHA256  # OpenAI CLIP's file, unchanged
    assert gzip.decompress(data).decode("utf-8").startswith("\"bpe_simple_vocab_16e6.txt#version: 0.2\n")
    licence = vocab.joinpath("LICENSE-CLIP.txt").read_text(encoding="utf-8")
    assert "Copyright (c) 2021 OpenAI" in licence and "MIT License" in licence


def test_tokenizer_reads_the_vocabulary_from_imagen_not_open_clip() -> None:
    # A fresh process that refuses to import open_clip and cannot find its distribution still builds the tokenizer.
    out = run_python(
        "import sys; from importlib import metadata\n"
        "sys.modules['open_clip'] = None\n"
        "real = metadata.distribution\n"
        "def no_open_clip(name):\n"
        "    if name.replace('-', '_').lower() == 'open_clip_torch': raise metadata.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "metadata.distribution = no_open_clip\n"
        "from imagen.inference.clip_tokenizer import clip_tokenizer\n"
        "print(clip_tokenizer('clip_l')('a photo of a cat').input_ids)\n")
    assert out.strip() == "[49406, 320, 1125, 539, 320, 2368, 49407]"


def test_missing_vocabulary_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clip_tokenizer_module, "_VOCAB_FILE", "no-such-file.txt.gz")
    with pytest.raises(ModelLoadError, match=r"imagen\.inference\.vocab/no-such-file\.txt\.gz is missing.*reinstall"):
        clip_tokenizer_module._read_bpe_file()


def test_damaged_vocabulary_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clip_tokenizer_module, "_VOCAB_FILE", "LICENSE-CLIP.txt")  # not gzip
    with pytest.raises(ModelLoadError, match=r"missing or damaged.*reinstall imagen"):
        clip_tokenizer_module._read_bpe_file()


def test_importing_the_runtime_pulls_in_no_torchvision_timm_or_open_clip() -> None:
    out = run_python(
        "import sys\n"
        "import imagen.inference, imagen.inference.clip_tokenizer, imagen.inference.single_file\n"
        "from imagen.inference.clip_tokenizer import clip_tokenizer\n"
        "clip_tokenizer('clip_g')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torchvision', 'timm', 'open_clip'}))\n")
    assert out.strip() == "[]"


def test_open_clip_is_no_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    every = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {d.split("=")[0].split("[")[0].strip().lower().replace("-", "_") for d in every}
    assert "torch" in names
    assert not {"open_clip_torch", "timm", "torchvision"} & names


# ---------------------------------------------------------------------------------------------------------------
# deploy/: every command is a real `imagen` command, every IMAGEN_ variable a real setting

DEPLOY = ROOT / "deploy"
IMAGEN_SERVICES = ("migrate", "api", "worker", "tasks", "beat")
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: str) -> str:
    # ${VAR:-default} takes its default; a required ${VAR:?message} a stand-in secret, as deploy/.env would give.
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) == "-" else "s" * 48, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def parse_imagen_command(args: list[str]) -> typer.Context:
    """Parse `imagen ARGS` as the CLI would (unknown options and bad values raise its usage errors, exit code 2),
    without running it."""
    command: Any = typer.main.get_command(cli_app)
    ctx, rest, name = typer.Context(command, info_name="imagen"), list(args), "imagen"
    while isinstance(command, TyperGroup):
        if not rest:
            raise LookupError(f"imagen {args}: a subcommand is missing")
        name, *rest = rest
        command = command.get_command(ctx, name)
        if command is None:
            raise LookupError(f"imagen {args}: no command {name!r}")
        if isinstance(command, TyperGroup):
            ctx = typer.Context(command, info_name=name, parent=ctx)
    return command.make_context(name, rest, parent=ctx)


def setting_names() -> set[str]:
    return {f"IMAGEN_{name.upper()}" for name in Settings.model_fields}


def test_compose_services_run_real_imagen_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(IMAGEN_SERVICES) <= services.keys()
    assert {"postgres", "redis", "minio", "createbucket"} <= services.keys()
    parsed = {}
    for name in IMAGEN_SERVICES:
        service = services[name]
        assert service["image"].startswith("imagen:")
        assert (service["build"]["dockerfile"], service["build"]["target"]) == ("deploy/Dockerfile", "imagen")
        parsed[name] = parse_imagen_command([interpolate(str(a)) for a in service["command"]])
    assert parsed["migrate"].command_path == "imagen db upgrade"
    assert parsed["api"].command_path == "imagen serve" and parsed["api"].params["host"] == "0.0.0.0"
    assert parsed["beat"].command_path == "imagen beat"
    worker, tasks = parsed["worker"], parsed["tasks"]
    assert (worker.command_path, worker.params["queues"], worker.params["concurrency"]) == \
        ("imagen worker", GPU_QUEUE, 1)
    assert (tasks.command_path, tasks.params["queues"]) == ("imagen worker", DEFAULT_QUEUE)
    # Only the api listens: the image's /healthz check is off for the others.
    assert "healthcheck" not in services["api"]
    assert all(services[s]["healthcheck"] == {"disable": True} for s in IMAGEN_SERVICES if s != "api")


def test_a_bad_command_would_be_caught() -> None:
    with pytest.raises(LookupError, match="no command 'wroker'"):
        parse_imagen_command(["wroker", "--queues", "gpu"])
    with pytest.raises(LookupError, match="subcommand is missing"):
        parse_imagen_command(["db"])
    for args in (["worker", "--concurency", "1"], ["worker", "--concurrency", "0"], ["serve", "--port", "web"]):
        with pytest.raises(Exception) as caught:
            parse_imagen_command(args)
        assert getattr(caught.value, "exit_code", None) == 2, args  # the CLI's usage error


def test_compose_environment_is_real_settings_that_validate(compose: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: interpolate(str(v)) for k, v in compose["x-imagen"]["environment"].items()}
    assert set(env) >= {"IMAGEN_DATABASE_URL", "IMAGEN_EXECUTOR", "IMAGEN_BROKER_URL", "IMAGEN_STORAGE",
                        "IMAGEN_S3_BUCKET", "IMAGEN_S3_ENDPOINT_URL", "IMAGEN_SECRET_KEY", "IMAGEN_QUARANTINE_KEY",
                        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    unknown = {k for k in env if k.startswith("IMAGEN_")} - setting_names()
    assert not unknown, f"not IMAGEN settings: {sorted(unknown)}"
    for name in [n for n in os.environ if n.startswith("IMAGEN_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.executor, settings.storage, settings.s3_redirect_outputs) == ("celery", "s3", False)
    assert settings.resolved_database_url.startswith("postgresql+psycopg://imagen:")
    assert settings.resolved_redis_url == "redis://redis:6379/0"


def test_env_example_names_only_real_settings_and_holds_no_secret() -> None:
    text = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    assignments = re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=(.*)$", text)
    names = {name for name, _ in assignments}
    assert {"IMAGEN_SECRET_KEY", "IMAGEN_QUARANTINE_KEY", "POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY"} <= names
    unknown = {n for n in names if n.startswith("IMAGEN_")} - setting_names()
    assert not unknown, f"not IMAGEN settings: {sorted(unknown)}"
    secrets = dict(assignments)
    assert all(secrets[n] == "" for n in ("IMAGEN_SECRET_KEY", "IMAGEN_QUARANTINE_KEY", "POSTGRES_PASSWORD",
                                          "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    # Every variable compose.yaml interpolates is explained there.
    compose_vars = set(INTERPOLATION.findall((DEPLOY / "compose.yaml").read_text(encoding="utf-8")))
    assert {name for name, _, _ in compose_vars} <= names


def test_dockerfile_entrypoints_and_default_command() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"(?m)^FROM ", text)
    assert stages[-1].splitlines()[0] == "base AS imagen"  # the default target is the last stage
    assert json.loads(re.search(r"(?m)^ENTRYPOINT (.+)$", stages[-1]).group(1)) == ["imagen"]  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"(?m)^CMD (.+)$", stages[-1]).group(1))  # type: ignore[union-attr]
    assert parse_imagen_command(cmd).command_path == "imagen serve"
    assert "http://127.0.0.1:8000/healthz" in stages[-1]
    runpod = next(stage for stage in stages if stage.startswith("base AS runpod"))
    entry = json.loads(re.search(r"(?m)^ENTRYPOINT (.+)$", runpod).group(1))  # type: ignore[union-attr]
    assert entry[:2] == ["python", "-m"] and importlib.util.find_spec(entry[2]) is not None
    assert re.search(r"(?m)^USER imagen$", text)
