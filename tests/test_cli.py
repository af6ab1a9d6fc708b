"""The `imagen` command line, run in-process against the same code a user runs."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from imagen.accounts.models import User
from imagen.accounts.security import verify_password
from imagen.cli import app
from imagen.kit.config import get_settings
from imagen.kit.db import Database


def test_db_upgrade_and_create_user_with_prompted_password(cli_env):
    runner = CliRunner()
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0 and "Database is up to date." in upgraded.output
    result = runner.invoke(app, ["admin", "create-user", "Root@Example.com", "--admin"],
                           input="Sturdy-passphrase-42\nSturdy-passphrase-42\n")
    assert result.exit_code == 0, result.output
    assert "Created admin root@example.com" in result.output
    db = Database(get_settings().resolved_database_url)
    with db.transaction() as s:
        user = s.scalars(select(User)).one()
        assert user.role == "admin" and verify_password(user.password_hash, "Sturdy-passphrase-42")
    db.dispose()
    again = runner.invoke(app, ["admin", "create-user", "root@example.com", "--password", "Sturdy-passphrase-42"])
    assert again.exit_code == 1 and "already exists" in again.output
    weak = runner.invoke(app, ["admin", "create-user", "x@example.com", "--password", "short"])
    assert weak.exit_code == 1 and "at least 10" in weak.output
    minor = runner.invoke(app, ["admin", "create-user", "kid@example.com", "--password", "Sturdy-passphrase-42",
                                "--date-of-birth", "2020-01-01"])
    assert minor.exit_code == 1 and "18 or older" in minor.output


def test_generate_writes_a_reproducible_png(cli_env):
    runner = CliRunner()
    out1, out2 = cli_env / "a.png", cli_env / "b.png"
    for out in (out1, out2):
        result = runner.invoke(app, ["generate", "a lighthouse", "-o", str(out), "--steps", "3", "--seed", "9",
                                     "--size", "96x64"])
        assert result.exit_code == 0, result.output
        assert "Wrote" in result.output
    assert Image.open(io.BytesIO(out1.read_bytes())).size == (96, 64)
    assert out1.read_bytes() == out2.read_bytes()


def test_generate_picks_a_random_seed_by_default_and_prints_it(cli_env):
    runner = CliRunner()
    seeds, images = [], []
    for name in ("r1.png", "r2.png"):
        out = cli_env / name
        result = runner.invoke(app, ["generate", "a lighthouse", "-o", str(out), "--steps", "2", "--size", "64x64"])
        assert result.exit_code == 0, result.output
        seeds.append(int(re.search(r"seed (\d+)", result.output).group(1)))
        images.append(out.read_bytes())
    assert seeds[0] != seeds[1] and images[0] != images[1]
    again = cli_env / "again.png"  # the printed seed reproduces the image
    assert runner.invoke(app, ["generate", "a lighthouse", "-o", str(again), "--steps", "2", "--size", "64x64",
                               "--seed", str(seeds[0])]).exit_code == 0
    assert again.read_bytes() == images[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--size", "100x64"], "multiple of 8"), (["--size", "big"], "WIDTHxHEIGHT"),
    (["--checkpoint", "nope"], "unknown checkpoint"),
])
def test_generate_refuses_bad_options(cli_env, args, message):
    result = CliRunner().invoke(app, ["generate", "x", "-o", str(cli_env / "x.png"), *args])
    assert result.exit_code != 0 and message in result.output


def test_generate_applies_the_prompt_rules(cli_env):
    out = cli_env / "x.png"
    result = CliRunner().invoke(app, ["generate", "nude child", "-o", str(out)])
    text = " ".join(result.output.replace("│", " ").split())  # typer's error box wraps the message
    assert result.exit_code != 0 and "sexual content involving minors" in text
    assert not out.exists()


def test_set_role(cli_env):
    runner = CliRunner()
    assert runner.invoke(app, ["admin", "create-user", "mod@example.com", "--password",
                               "Sturdy-passphrase-42"]).exit_code == 0
    done = runner.invoke(app, ["admin", "set-role", "mod@example.com", "moderator"])
    assert done.exit_code == 0 and "moderator" in done.output
    assert done.output.strip() == "mod@example.com is now moderator"
    boss = runner.invoke(app, ["admin", "set-role", "mod@example.com", "boss"])
    assert boss.exit_code == 1 and "must be one of user, moderator, admin" in boss.output, boss.output
    nobody = runner.invoke(app, ["admin", "set-role", "nobody@example.com", "admin"])
    assert nobody.exit_code == 1 and "No account with the email nobody@example.com" in nobody.output

    from imagen.accounts.service import account_service
    from imagen.kit.config import get_settings
    from imagen.kit.db import Database

    db = Database(get_settings().resolved_database_url)
    try:
        with db.transaction() as s:
            assert account_service.get_by_email(s, "mod@example.com").role == "moderator"
    finally:
        db.dispose()


def test_serve_prints_the_data_folder_the_device_and_how_to_make_the_first_admin(cli_env):
    from imagen.cli import first_run_lines

    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    lines = "\n".join(first_run_lines(get_settings()))
    assert str((cli_env / "data").resolve()) in lines and "IMAGEN_DATA_DIR" in lines
    assert "device: cpu" in lines and "imagen admin create-user" in lines
    assert "model: imagen-demo" in lines and "SD 1.5/SDXL" in lines
    assert runner.invoke(app, ["admin", "create-user", "op@example.com", "--admin", "--password",
                               "Sturdy-passphrase-42"]).exit_code == 0
    assert "create-user" not in "\n".join(first_run_lines(get_settings()))  # an admin exists: no hint


def test_serve_on_the_fleet_says_this_process_runs_no_model(cli_env):
    from imagen.cli import describe_device
    from imagen.kit.config import Settings

    fleet = Settings(data_dir=cli_env / "data", executor="celery", broker_url="redis://127.0.0.1:6379/0")
    assert describe_device(fleet).startswith("none in this process")
