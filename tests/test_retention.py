"""Retention (policy §7): each category is purged after its configured period, newer data stays, a dry run
changes nothing, files go only after the commit, and running twice is harmless."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from imagen.accounts.models import LoginSession, SecurityEvent, User
from imagen.cli import app as cli
from imagen.generation.models import Generation, Output
from imagen.kit.config import Settings, get_settings
from imagen.kit.db import Database, new_id, utcnow
from imagen.kit.tasks import Scheduler
from imagen.models import Base
from imagen.notifications.models import Notification
from imagen.privacy.retention import retention_service
from tests.conftest import signup

DAY = timedelta(days=1)


def user_id(session, email: str = "ada@example.com") -> str:
    return session.scalars(select(User.id).where(User.email == email)).one()


def add_generation(session, uid: str, *, status: str, finished_ago: timedelta | None, blobs=None,
                   with_output: bool = False) -> Generation:
    gen = Generation(id=new_id(), user_id=uid, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                     params={"prompt": "a lighthouse"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                     models=[], consent_model_improvement=False, status=status,
                     finished_at=utcnow() - finished_ago if finished_ago is not None else None)
    session.add(gen)
    session.flush()
    if with_output:
        key = f"outputs/{uid}/{gen.id}/0.png"
        blobs.put(key, b"png")
        session.add(Output(generation_id=gen.id, user_id=uid, index=0, blob_key=key, width=8, height=8, seed=1,
                           size_bytes=3))
    return gen


def seed_old_and_new(app) -> dict[str, str]:
    """Rows on both sides of each default period; returns the ids that must survive."""
    now, blobs = utcnow(), app.state.services.blobs
    with app.state.services.db.transaction() as s:
        uid = user_id(s)
        old_event = SecurityEvent(user_id=uid, kind="login", created_at=now - 400 * DAY)
        new_event = SecurityEvent(user_id=uid, kind="login", created_at=now - 300 * DAY)
        old_session = LoginSession(user_id=uid, token_hash="a" * 64, csrf_token="x", expires_at=now - 8 * DAY)
        recent_session = LoginSession(user_id=uid, token_hash="b" * 64, csrf_token="x", expires_at=now - 2 * DAY)
        old_read = Notification(user_id=uid, kind="x", title="old", read_at=now - 200 * DAY)
        unread = Notification(user_id=uid, kind="x", title="unread", created_at=now - 900 * DAY)
        s.add_all([old_event, new_event, old_session, recent_session, old_read, unread])
        old_failed = add_generation(s, uid, status="canceled", finished_ago=40 * DAY, blobs=blobs, with_output=True)
        new_failed = add_generation(s, uid, status="failed", finished_ago=5 * DAY)
        old_ok = add_generation(s, uid, status="succeeded", finished_ago=400 * DAY)
        s.flush()
        return {"old_event": old_event.id, "new_event": new_event.id, "old_session": old_session.id,
                "recent_session": recent_session.id, "old_read": old_read.id, "unread": unread.id,
                "old_failed": old_failed.id, "new_failed": new_failed.id, "old_ok": old_ok.id,
                "old_output_key": f"outputs/{uid}/{old_failed.id}/0.png"}


def counts(purges) -> dict[str, int]:
    """Count per data-map entry (or per category for the purges that are not an entry's)."""
    return {p.name or p.category: p.count for p in purges}


def test_old_rows_are_purged_newer_kept_dry_run_changes_nothing_and_twice_is_harmless(client, app, settings):
    signup(client)
    ids = seed_old_and_new(app)
    blobs, db = app.state.services.blobs, app.state.services.db

    with db.transaction() as s:
        dry = retention_service.run(s, settings=settings, blobs=blobs, dry_run=True)
    assert counts(dry)["security_events"] == 1
    assert counts(dry)["login_sessions"] == 1
    assert counts(dry)["generations"] == 1
    assert counts(dry)["notifications"] == 1
    failed = next(p for p in dry if p.name == "generations")
    assert failed.blobs == 1 and failed.setting == "IMAGEN_RETENTION_FAILED_GENERATIONS_DAYS"
    assert failed.period == "30 days"
    with db.transaction() as s:  # the dry run changed nothing
        assert s.get(SecurityEvent, ids["old_event"]) is not None
        assert s.get(Generation, ids["old_failed"]) is not None
    assert blobs.exists(ids["old_output_key"])

    with db.transaction() as s:
        assert counts(retention_service.plan(s, settings=settings)) == {
            k: v for k, v in counts(dry).items() if k != "transient inputs"}
        retention_service.run(s, settings=settings, blobs=blobs)
        assert blobs.exists(ids["old_output_key"]), "files go only after the commit"
    assert not blobs.exists(ids["old_output_key"])

    with db.transaction() as s:
        assert s.get(SecurityEvent, ids["old_event"]) is None
        assert s.get(SecurityEvent, ids["new_event"]) is not None
        assert s.get(LoginSession, ids["old_session"]) is None
        assert s.get(LoginSession, ids["recent_session"]) is not None
        assert s.get(Notification, ids["old_read"]) is None
        assert s.get(Notification, ids["unread"]) is not None
        assert s.get(Generation, ids["old_failed"]) is None
        assert s.scalar(select(func.count()).select_from(Output)) == 0
        assert s.get(Generation, ids["new_failed"]) is not None
        assert s.get(Generation, ids["old_ok"]) is not None  # succeeded ones stay while the account exists
        again = retention_service.run(s, settings=settings, blobs=blobs)
    assert sum(p.count for p in again) == 0


def test_a_rolled_back_run_keeps_every_file(client, app, settings):
    signup(client)
    ids = seed_old_and_new(app)
    with pytest.raises(RuntimeError), app.state.services.db.transaction() as s:
        retention_service.run(s, settings=settings, blobs=app.state.services.blobs)
        raise RuntimeError("boom")
    assert app.state.services.blobs.exists(ids["old_output_key"])
    with app.state.services.db.transaction() as s:
        assert s.get(Generation, ids["old_failed"]) is not None


def test_periods_come_from_configuration(client, app, settings):
    signup(client)
    seed_old_and_new(app)
    longer = settings.model_copy(update={"retention_security_log_days": 500, "retention_failed_generations_days": 3})
    with app.state.services.db.transaction() as s:
        plan = counts(retention_service.plan(s, settings=longer))
    assert plan["security_events"] == 0
    assert plan["generations"] == 2  # both failed generations are past 3 days


def test_orphaned_inputs_of_finished_or_gone_generations_are_removed(client, app, settings):
    signup(client)
    blobs = app.state.services.blobs
    with app.state.services.db.transaction() as s:
        uid = user_id(s)
        done = add_generation(s, uid, status="succeeded", finished_ago=DAY)
        queued = add_generation(s, uid, status="queued", finished_ago=None)
    keys = {name: f"inputs/{uid}/{gen_id}/init_image.png" for name, gen_id in
            (("done", done.id), ("queued", queued.id), ("gone_old", new_id()), ("gone_new", new_id()))}
    for key in keys.values():
        blobs.put(key, b"png")
    old = time.time() - 2 * 3600
    os.utime(blobs.local_path(keys["gone_old"]), (old, old))

    with app.state.services.db.transaction() as s:
        dry = next(p for p in retention_service.plan(s, settings=settings, blobs=blobs)
                   if p.category == "transient inputs")
        assert dry.count == 2
        retention_service.run(s, settings=settings, blobs=blobs)
    assert not blobs.exists(keys["done"]) and not blobs.exists(keys["gone_old"])
    assert blobs.exists(keys["queued"]), "a job that has not run yet keeps its input"
    assert blobs.exists(keys["gone_new"]), "an input whose request has not committed yet is left alone"


def test_other_parts_tables_are_skipped_or_purged(client, app, settings, monkeypatch):
    """Every entry's rule applies to its table; a table that does not exist (a part not built) is skipped with
    exactly that reason, and only that rule is skipped."""
    from imagen.privacy import retention

    signup(client)
    with app.state.services.db.transaction() as s:
        plan = retention_service.plan(s, settings=settings)
    assert [(p.name, p.skipped) for p in plan if p.skipped] == []
    assert {p.name for p in plan if p.name} == {r.item.name for r in retention.rules()}
    assert {"exports", "privacy_request_emails", "privacy_requests", "erasure_requests"} <= {p.name for p in plan}

    real = retention._tables()
    monkeypatch.setattr(retention, "_tables", lambda: {
        k: v for k, v in real.items() if k not in ("outbound_emails", "privacy_requests")})
    with app.state.services.db.transaction() as s:
        skipped = {p.name: p.skipped for p in retention_service.plan(s, settings=settings) if p.skipped}
    assert skipped == {"privacy_request_emails": "no outbound_emails table",
                       "account_emails": "no outbound_emails table",
                       "notice_emails": "no outbound_emails table",
                       "privacy_requests": "no privacy_requests table"}


# Every retention period and legal hold the policy (§7) promises; an entry losing its period fails here.
PROMISED = {"login_sessions", "security_events", "generations", "notifications", "exports", "erasure_requests",
            "privacy_requests", "privacy_request_events", "privacy_request_emails", "safety_cases",
            "safety_evidence", "safety_case_actions", "prompt_refusals", "notice_emails",
            "account_links", "login_failures", "account_emails",  # accounts security
            "credit_ledger", "purchases", "billing_cases"}  # billing records, kept for accounting law


def _value(column):
    """Something a NOT NULL column accepts, for rows this test makes up."""
    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, String, Text
    from sqlalchemy.types import TypeDecorator

    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, DateTime):
        return utcnow()
    if isinstance(kind, Date):
        return utcnow().date()
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer | Float):
        return 0
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return new_id()[: kind.length or 32]
    raise AssertionError(f"no value for {column}")


def _insert(session, table, values: dict) -> str:
    """Insert a row with `values`, filling every other NOT NULL column (a parent row for a foreign key)."""
    from sqlalchemy import insert

    row = dict(values)
    for column in table.c:
        if column.name in row or column.nullable or column.default is not None or column.server_default is not None:
            continue
        fk = next(iter(column.foreign_keys), None)
        row[column.name] = _insert(session, fk.column.table, {}) if fk is not None else _value(column)
    pk = next(iter(table.primary_key.columns))
    row.setdefault(pk.name, new_id())
    session.execute(insert(table).values(row))
    return row[pk.name]


def _aged(item, settings, now, *, ended: bool) -> dict:
    """Column values that put a row of `item` past (ended) or within its period or hold."""
    values = {item.only[0]: item.only[1][0]} if item.only else {}
    if item.period:
        days = getattr(settings, item.period.setting)
        values[item.period.clock] = now - timedelta(days=days + 1 if ended else max(days - 1, 0))
        if item.period.only:
            values[item.period.only[0]] = item.period.only[1][0]
    elif item.hold.until:
        values[item.hold.until] = now + (-DAY if ended else DAY)
    elif not item.hold.follows:
        days = getattr(settings, item.hold.setting)
        values[item.hold.clocks[0]] = now - timedelta(days=days + 1 if ended else max(days - 1, 0))
    return values


def _make(session, item, settings, now, *, ended: bool) -> str:
    from imagen.privacy.datamap import DATA_MAP, parent_table

    tables = Base.metadata.tables
    table = tables[item.table]
    values = _aged(item, settings, now, ended=ended)
    if item.hold and item.hold.follows:  # kept with its parent: the parent's hold decides
        parent = parent_table(table, item.hold.follows)
        parent_item = next(i for i in DATA_MAP if i.table == parent.name and i.hold)
        values[item.hold.follows] = _make(session, parent_item, settings, now, ended=ended)
    return _insert(session, table, values)


def test_every_period_in_the_data_map_has_a_purge(client, app, settings):
    """For each period and legal hold the data map declares, the retention run deletes (or empties) a row past it
    and keeps a row within it; for a hold that names its own end (`until`), also a row without one."""
    from imagen.privacy.datamap import DATA_MAP

    timed = [i for i in DATA_MAP if i.table and (i.period or i.hold)]
    assert {i.name for i in timed} == PROMISED
    now, db = utcnow(), app.state.services.db
    rows: dict[str, tuple[str, str]] = {}
    with db.transaction() as s:
        for item in timed:
            rows[item.name] = (_make(s, item, settings, now, ended=True), _make(s, item, settings, now, ended=False))
    fallback = {}
    with db.transaction() as s:  # a hold with its own end falls back to its clock where the end is not set
        for item in timed:
            if item.hold and item.hold.until and Base.metadata.tables[item.table].c[item.hold.until].nullable:
                days = getattr(settings, item.hold.setting)
                old = _insert(s, Base.metadata.tables[item.table], {
                    item.hold.clocks[-1]: now - timedelta(days=days + 1), **_aged(item, settings, now, ended=True),
                    item.hold.until: None})
                new = _insert(s, Base.metadata.tables[item.table], {item.hold.clocks[0]: now - DAY})
                fallback[item.name] = (old, new)
    assert fallback, "no hold exercised its fallback clock"
    with db.transaction() as s:
        purges = retention_service.run(s, settings=settings, blobs=app.state.services.blobs, now=now)
    assert {p.name for p in purges if p.count} >= PROMISED - {"safety_evidence", "safety_case_actions",
                                                             "privacy_request_events"}  # those go with their parent
    with db.transaction() as s:
        for item in timed:
            table = Base.metadata.tables[item.table]
            pk = next(iter(table.primary_key.columns))
            for (old, new) in [rows[item.name], *([fallback[item.name]] if item.name in fallback else [])]:
                kept = s.execute(select(table).where(pk == old)).first()
                blank = item.period.blank if item.period else ()
                assert kept is None or (blank and all(kept._mapping[c] is None for c in blank)), item.name
                assert s.execute(select(table).where(pk == new)).first() is not None, item.name


def test_prompt_refusals_are_purged_after_their_period(client, app, settings):
    from imagen.safety.models import PromptRefusalRecord

    signup(client)
    r = client.post("/api/v1/generations", json={"workflow": "txt2img", "params": {"prompt": "nude child"}})
    assert r.status_code == 422
    now = utcnow()
    with app.state.services.db.transaction() as s:
        [refusal] = s.scalars(select(PromptRefusalRecord)).all()
        refusal.created_at = now - timedelta(days=settings.prompt_refusals_retention_days + 1)
        recent = PromptRefusalRecord(user_id=refusal.user_id, rule_id="x", category="y", field="prompt", prompt="p",
                                     created_at=now - timedelta(days=settings.prompt_refusals_retention_days - 1))
        s.add(recent)
        s.flush()
        old_id, recent_id = refusal.id, recent.id
    with app.state.services.db.transaction() as s:
        purge = next(p for p in retention_service.run(s, settings=settings, blobs=app.state.services.blobs)
                     if p.name == "prompt_refusals")
        assert (purge.count, purge.setting) == (1, "IMAGEN_PROMPT_REFUSALS_RETENTION_DAYS")
    with app.state.services.db.transaction() as s:
        assert s.get(PromptRefusalRecord, old_id) is None
        assert s.get(PromptRefusalRecord, recent_id) is not None


def test_scheduler_runs_retention_in_the_background_and_can_be_disabled(client, app, settings):
    signup(client)
    ids = seed_old_and_new(app)
    services = app.state.services
    assert "privacy.retention" in services.scheduler.schedule()  # the app's own scheduler runs it
    off = Scheduler(services.tasks, settings.model_copy(update={"retention_interval_hours": 0}))
    assert "privacy.retention" not in off.schedule()
    fast = Scheduler(services.tasks, settings.model_copy(update={"retention_interval_hours": 0.0005}),
                     run_at_start=())
    fast.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with services.db.transaction() as s:
                if s.get(SecurityEvent, ids["old_event"]) is None:
                    break
            time.sleep(0.1)
    finally:
        fast.stop()
    with services.db.transaction() as s:
        assert s.get(SecurityEvent, ids["old_event"]) is None
        assert s.get(SecurityEvent, ids["new_event"]) is not None


def test_cli_retention_run_prints_what_it_would_purge_then_purges(cli_env):
    runner = CliRunner()
    assert runner.invoke(cli, ["admin", "create-user", "op@example.com", "--password", "Sturdy-passphrase-42"]
                         ).exit_code == 0
    settings: Settings = get_settings()
    db = Database(settings.resolved_database_url)
    with db.transaction() as s:
        s.add(SecurityEvent(user_id=user_id(s, "op@example.com"), kind="login", created_at=utcnow() - 400 * DAY))
    try:
        dry = runner.invoke(cli, ["retention", "run", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "Would purge" in dry.output and "security log" in dry.output
        assert "IMAGEN_RETENTION_SECURITY_LOG_DAYS" in dry.output and "1 item(s) would be purged" in dry.output
        with db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(SecurityEvent)) == 1
        real = runner.invoke(cli, ["retention", "run"])
        assert real.exit_code == 0, real.output
        assert "Purged" in real.output and "1 item(s) purged" in real.output
        with db.transaction() as s:
            assert s.scalar(select(func.count()).select_from(SecurityEvent)) == 0
        assert "0 item(s) purged" in runner.invoke(cli, ["retention", "run"]).output
    finally:
        db.dispose()
