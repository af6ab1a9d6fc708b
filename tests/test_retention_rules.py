"""Retention rules (policy §7) one by one, without the app: what each plan line says, the first clock that is set,
holds with their own end, columns emptied instead of rows deleted, more rows than one batch, tables a rule cannot
handle, expired export files, stray inputs, and the scheduler. Written from the mutation run of
imagen/privacy/retention.py (docs/privacy.md, "Mutation testing"); test_retention.py covers the app's paths.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from datetime import date, timedelta
from types import SimpleNamespace

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from imagen.accounts.models import SecurityEvent, User
from imagen.kit.db import Database, new_id, utcnow
from imagen.kit.tasks import TASKS, InProcessTasks, Scheduler, first_delay, run_task, schedule
from imagen.privacy import retention
from imagen.privacy.datamap import DATA_MAP, Period
from imagen.privacy.models import Erasure, Export
from imagen.privacy.retention import Rule, retention_service

DAY = timedelta(days=1)


def add_user(db: Database) -> str:
    with db.transaction() as s:
        user = User(email=f"{new_id()}@example.com", password_hash="!", date_of_birth=date(1990, 1, 1),
                    country="GB")
        s.add(user)
        s.flush()
        return user.id


def item(name: str):
    return next(i for i in DATA_MAP if i.name == name)


def test_every_plan_line_names_its_setting_period_cutoff_and_what_goes(db, settings):
    now = utcnow()
    with db.transaction() as s:
        plan = {(p.name, p.what): p for p in retention_service.plan(s, settings=settings, now=now)}
    for rule in retention.rules():
        days = getattr(settings, rule.setting)
        what = rule.item.period.what if rule.kind == "period" else (
            f"{rule.item.description} kept as a legal hold, once the hold ends")
        line = plan[(rule.item.name, what)]
        assert (line.category, line.setting, line.period, line.cutoff, line.skipped) == (
            rule.item.category, f"IMAGEN_{rule.setting.upper()}", f"{days} days", now - timedelta(days=days), None)
    exports = next(p for p in plan.values() if p.category == "exports" and p.name is None)
    assert (exports.what, exports.setting, exports.period, exports.cutoff) == (
        "ZIP files of exports whose download link has expired", "IMAGEN_EXPORT_EXPIRY_DAYS",
        "until the link expires", now)


def test_rules_are_the_data_maps_periods_then_holds_in_its_order():
    expected = [(i.name, kind) for i in DATA_MAP if i.table for kind in ("period", "hold") if getattr(i, kind)]
    assert [(r.item.name, r.kind) for r in retention.rules()] == expected
    rule = Rule(item("erasure_requests"), "hold")
    assert rule.setting == "retention_erasure_log_days"
    assert Rule(item("security_events"), "period").setting == "retention_security_log_days"


def test_more_rows_than_one_batch_all_go_and_the_total_adds_up(db, settings, blobs):
    uid = add_user(db)
    old = utcnow() - timedelta(days=settings.retention_security_log_days + 1)
    with db.transaction() as s:
        s.execute(insert(SecurityEvent), [{"id": new_id(), "user_id": uid, "kind": "login", "created_at": old}
                                          for _ in range(retention.CHUNK * 2 + 3)])
        s.add(SecurityEvent(user_id=uid, kind="login"))
    with db.transaction() as s:
        purges = retention_service.run(s, settings=settings, blobs=blobs)
    assert next(p for p in purges if p.name == "security_events").count == retention.CHUNK * 2 + 3
    assert retention_service.total(purges) == sum(p.count for p in purges) == retention.CHUNK * 2 + 3
    with db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(SecurityEvent)) == 1


def test_a_period_that_empties_columns_keeps_the_row(db, settings, blobs, monkeypatch):
    base = item("security_events")
    emptying = dataclasses.replace(base, period=Period(
        setting="retention_security_log_days", what="addresses", blank=("ip_address", "user_agent")))
    monkeypatch.setattr(retention, "rules", lambda: [Rule(emptying, "period")])
    uid = add_user(db)
    old = utcnow() - timedelta(days=settings.retention_security_log_days + 1)
    with db.transaction() as s:
        gone = SecurityEvent(user_id=uid, kind="login", ip_address="203.0.113.9", user_agent="Firefox",
                             created_at=old)
        kept = SecurityEvent(user_id=uid, kind="login", ip_address="203.0.113.10", user_agent="Safari")
        s.add_all([gone, kept])
    with db.transaction() as s:
        assert [p.count for p in retention_service.plan(s, settings=settings) if p.name] == [1]
        retention_service.run(s, settings=settings, blobs=blobs)
    with db.transaction() as s:
        emptied, untouched = s.get(SecurityEvent, gone.id), s.get(SecurityEvent, kept.id)
        assert (emptied.kind, emptied.user_id, emptied.ip_address, emptied.user_agent) == ("login", uid, None, None)
        assert (untouched.ip_address, untouched.user_agent) == ("203.0.113.10", "Safari")


def test_a_table_a_rule_cannot_address_row_by_row_is_skipped_by_name(db, settings, monkeypatch):
    real = retention._tables()
    odd = Table("security_events", MetaData(), Column("a", Integer, primary_key=True),
                Column("b", String(8), primary_key=True), Column("created_at", Integer))
    monkeypatch.setattr(retention, "_tables", lambda: {**real, "security_events": odd})
    with db.transaction() as s:
        line = next(p for p in retention_service.plan(s, settings=settings) if p.name == "security_events")
    assert (line.count, line.skipped) == (0, "security_events has no single-column primary key")


def test_the_first_set_clock_or_the_rows_own_end_decides_a_hold(db, settings, blobs):
    days = settings.retention_erasure_log_days
    now, old, recent = utcnow(), utcnow() - timedelta(days=days + 1), utcnow() - DAY
    cases = {  # (completed_at, canceled_at, hold_until) -> purged?
        "completed long ago": ((old, None, None), True),
        "canceled long ago": ((None, old, None), True),
        "completed recently, canceled long ago": ((recent, old, None), False),  # the first set clock counts
        "open": ((None, None, None), False),
        "own end passed": ((recent, None, now - DAY), True),
        "own end ahead": ((old, None, now + DAY), False),
    }
    ids = {}
    with db.transaction() as s:
        for name, ((completed, canceled, until), _) in cases.items():
            row = Erasure(status="completed", subject_email_hash="e", subject_id_hash="i", due_at=old,
                          completed_at=completed, canceled_at=canceled, hold_until=until)
            s.add(row)
            s.flush()
            ids[name] = row.id
    with db.transaction() as s:
        line = next(p for p in retention_service.run(s, settings=settings, blobs=blobs, now=now)
                    if p.name == "erasure_requests")
        assert line.count == 3
    with db.transaction() as s:
        for name, (_, purged) in cases.items():
            assert (s.get(Erasure, ids[name]) is None) == purged, name


def test_expired_export_files_are_counted_and_go_only_on_a_real_run(db, settings, blobs):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        expired = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/a.zip", expires_at=now - DAY)
        fileless = Export(user_id=uid, status="ready", blob_key=None, expires_at=now - DAY)
        valid = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/b.zip", expires_at=now + DAY)
        pending = Export(user_id=uid, status="pending", expires_at=None)
        s.add_all([expired, fileless, valid, pending])
    for key in (expired.blob_key, valid.blob_key):
        blobs.put(key, b"zip")
    with db.transaction() as s:
        line = next(p for p in retention_service.run(s, settings=settings, blobs=blobs, now=now, dry_run=True)
                    if p.category == "exports" and p.name is None)
        assert (line.count, line.blobs) == (2, 1)
    assert blobs.exists(expired.blob_key)
    with db.transaction() as s:
        assert s.get(Export, expired.id).status == "ready"
        retention_service.run(s, settings=settings, blobs=blobs, now=now)
    assert not blobs.exists(expired.blob_key) and blobs.exists(valid.blob_key)
    with db.transaction() as s:
        assert s.get(Export, expired.id).status == "expired" and s.get(Export, valid.id).status == "ready"


def test_only_input_files_in_the_jobs_layout_are_treated_as_stray(db, settings, blobs):
    gen = new_id()
    stray = f"inputs/u1/{gen}/init_image.png"
    other = [f"inputs/u1/{gen}/nested/init_image.png", "inputs/u1/not-a-job-id/init_image.png",
             f"outputs/u1/{gen}/0.png"]
    for key in (stray, *other):
        blobs.put(key, b"x")
    old = (utcnow() - timedelta(hours=settings.retention_orphan_input_hours + 1)).timestamp()
    for key in (stray, *other):
        os.utime(blobs.local_path(key), (old, old))
    with db.transaction() as s:
        dry = next(p for p in retention_service.run(s, settings=settings, blobs=blobs, dry_run=True)
                   if p.category == "transient inputs")
        assert (dry.count, dry.blobs, dry.setting, dry.period, dry.what) == (
            1, 1, "IMAGEN_RETENTION_ORPHAN_INPUT_HOURS", "until the job ends",
            "img2img/inpaint inputs whose generation has finished or is gone")
    assert blobs.exists(stray)
    with db.transaction() as s:
        retention_service.run(s, settings=settings, blobs=blobs)
    assert not blobs.exists(stray) and all(blobs.exists(k) for k in other)


def test_a_stray_input_whose_age_cannot_be_read_is_left_for_later(db, settings, blobs, monkeypatch):
    key = f"inputs/u1/{new_id()}/init_image.png"
    blobs.put(key, b"x")

    def unknown(k):
        raise KeyError(k)  # a store without local files

    monkeypatch.setattr(blobs, "local_path", unknown)
    with db.transaction() as s:
        line = next(p for p in retention_service.run(s, settings=settings, blobs=blobs)
                    if p.category == "transient inputs")
    assert line.count == 0 and blobs.exists(key)


def test_the_scheduler_waits_runs_and_survives_a_failed_run(db, settings, blobs, monkeypatch):
    hourly = settings.model_copy(update={"retention_interval_hours": 2})
    assert schedule(hourly)["privacy.retention"] == 7200 and first_delay("privacy.retention", hourly) == 300.0
    assert "privacy.retention" not in schedule(settings.model_copy(update={"retention_interval_hours": 0}))
    stray = f"inputs/u1/{new_id()}/init_image.png"
    blobs.put(stray, b"x")
    old = (utcnow() - timedelta(hours=settings.retention_orphan_input_hours + 1)).timestamp()
    os.utime(blobs.local_path(stray), (old, old))
    purges = run_task(SimpleNamespace(db=db, blobs=blobs, settings=settings), "privacy.retention")
    assert {p.name for p in purges if p.name} == {r.item.name for r in retention.rules()}
    assert not blobs.exists(stray)  # the scheduled run reaches the blob store too

    calls, ran_twice = [], threading.Event()

    def flaky(services):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        ran_twice.set()
        return []

    monkeypatch.setitem(TASKS, "privacy.retention", dataclasses.replace(TASKS["privacy.retention"], fn=flaky))
    tasks = InProcessTasks(SimpleNamespace())
    tasks.start()
    fast = Scheduler(tasks, settings.model_copy(update={"retention_interval_hours": 0.0001}), run_at_start=())
    fast.start()
    thread = fast._thread
    fast.start()  # a second start keeps the one thread
    assert thread is not None and fast._thread is thread and thread.daemon and thread.name == "imagen-scheduler"
    try:
        assert ran_twice.wait(20), "the run after a failure did not happen"
    finally:
        fast.stop()
        tasks.stop()
    assert fast._thread is None and not thread.is_alive()


def _filler(column):
    """Something a NOT NULL column accepts, for rows made up here."""
    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Text
    from sqlalchemy.types import TypeDecorator

    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, DateTime):
        return utcnow()
    if isinstance(kind, Date):
        return date.today()
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer | Float):
        return 0
    if isinstance(kind, JSON):
        return {}
    if isinstance(kind, String | Text):
        return new_id()[: getattr(kind, "length", None) or 32]
    raise AssertionError(f"no value for {column}")


def add_row(s, name: str, **values) -> str:
    """A row of table `name` with `values`; other NOT NULL columns filled (a parent row made for a foreign key)."""
    table = retention._tables()[name]
    row = dict(values)
    for column in table.c:
        if column.name in row or column.nullable or column.default is not None or column.server_default is not None:
            continue
        fk = next(iter(column.foreign_keys), None)
        row[column.name] = add_row(s, fk.column.table.name) if fk is not None else _filler(column)
    pk = next(iter(table.primary_key.columns))
    row.setdefault(pk.name, new_id())
    s.execute(insert(table).values(row))
    return row[pk.name]


def test_a_kept_row_follows_its_own_parents_hold(db, settings, blobs):
    """Request events are kept with their request: each with its own, an open request's for good."""
    days = settings.retention_privacy_requests_days
    now = utcnow()
    with db.transaction() as s:
        closed_long_ago = add_row(s, "privacy_requests", closed_at=now - timedelta(days=days + 1))
        closed_recently = add_row(s, "privacy_requests", closed_at=now - DAY)
        still_open = add_row(s, "privacy_requests", closed_at=None)
        events = {parent: add_row(s, "privacy_request_events", request_id=parent)
                  for parent in (closed_long_ago, closed_recently, still_open)}
    with db.transaction() as s:
        plan = {p.name: p.count for p in retention_service.plan(s, settings=settings, now=now) if p.name}
        assert (plan["privacy_requests"], plan["privacy_request_events"]) == (1, 1)
        retention_service.run(s, settings=settings, blobs=blobs, now=now)
    table = retention._tables()["privacy_request_events"]
    with db.transaction() as s:
        left = set(s.scalars(select(table.c.id)))
    assert left == {events[closed_recently], events[still_open]}


def test_a_rule_for_part_of_a_table_leaves_the_rest(db, settings, blobs):
    """The privacy-request mail hold covers those mails only; other mail in the table is not its to delete."""
    old = utcnow() - timedelta(days=settings.retention_outbound_emails_days + 1)
    with db.transaction() as s:
        code = add_row(s, "outbound_emails", kind="privacy_request.code", created_at=old)
        other = add_row(s, "outbound_emails", kind="account.notice", created_at=old)
    with db.transaction() as s:
        line = next(p for p in retention_service.run(s, settings=settings, blobs=blobs)
                    if p.name == "privacy_request_emails")
        assert line.count == 1
    table = retention._tables()["outbound_emails"]
    with db.transaction() as s:
        assert set(s.scalars(select(table.c.id))) == {other} != {code}


def test_periods_and_holds_end_after_their_last_moment_not_on_it(db, settings, blobs):
    now = utcnow()
    uid = add_user(db)
    with db.transaction() as s:
        on_the_day = SecurityEvent(user_id=uid, kind="login",
                                   created_at=now - timedelta(days=settings.retention_security_log_days))
        until_now = Erasure(status="completed", subject_email_hash="e", subject_id_hash="i", due_at=now,
                            completed_at=now, hold_until=now)
        s.add_all([on_the_day, until_now])
    with db.transaction() as s:
        retention_service.run(s, settings=settings, blobs=blobs, now=now)
    with db.transaction() as s:
        assert s.get(SecurityEvent, on_the_day.id) is not None and s.get(Erasure, until_now.id) is not None


def test_files_of_purged_rows_go_with_them_also_across_batches(db, settings, blobs, monkeypatch):
    """Outputs cascade with their failed generation; an export record's own file goes with the record."""
    batches = retention._chunks
    monkeypatch.setattr(retention, "_chunks", lambda items: batches(items, 2))  # 3 rows: two batches
    uid, now = add_user(db), utcnow()
    finished = now - timedelta(days=settings.retention_failed_generations_days + 1)
    keys = []
    with db.transaction() as s:
        for _ in range(3):
            gen = add_row(s, "generations", user_id=uid, status="failed", finished_at=finished)
            keys.append(f"outputs/{uid}/{gen}/0.png")
            add_row(s, "outputs", generation_id=gen, user_id=uid, blob_key=keys[-1])
        old_export = Export(user_id=uid, status="expired", blob_key=f"exports/{uid}/left.zip",
                            expires_at=now - timedelta(days=settings.retention_exports_days + 1))
        s.add(old_export)
    keys.append(old_export.blob_key)
    for key in keys:
        blobs.put(key, b"x")
    with db.transaction() as s:
        dry = {p.name: p for p in retention_service.run(s, settings=settings, blobs=blobs, dry_run=True) if p.name}
        assert (dry["generations"].count, dry["generations"].blobs) == (3, 3)
        assert (dry["exports"].count, dry["exports"].blobs) == (1, 1)
        retention_service.run(s, settings=settings, blobs=blobs)
    assert not any(blobs.exists(k) for k in keys)


def test_a_period_that_empties_columns_keeps_the_rows_files(db, settings, blobs, monkeypatch):
    base = item("exports")
    emptying = dataclasses.replace(base, period=dataclasses.replace(base.period, blank=("error",)))
    monkeypatch.setattr(retention, "rules", lambda: [Rule(emptying, "period")])
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        row = Export(user_id=uid, status="expired", blob_key=f"exports/{uid}/kept.zip", error="x",
                     expires_at=now - timedelta(days=settings.retention_exports_days + 1))
        s.add(row)
    blobs.put(row.blob_key, b"zip")
    with db.transaction() as s:
        line = next(p for p in retention_service.run(s, settings=settings, blobs=blobs, now=now) if p.name)
        assert (line.count, line.blobs) == (1, 0)
    assert blobs.exists(row.blob_key)


def test_export_files_expire_by_the_runs_clock_and_only_ready_ones_count(db, settings, blobs, monkeypatch):
    uid, now = add_user(db), utcnow()
    with db.transaction() as s:
        soon = Export(user_id=uid, status="ready", blob_key=f"exports/{uid}/soon.zip", expires_at=now + 2 * DAY)
        exact = Export(user_id=uid, status="ready", blob_key=None, expires_at=now)
        done = Export(user_id=uid, status="expired", blob_key=None, expires_at=now - DAY)
        s.add_all([soon, exact, done])
    blobs.put(soon.blob_key, b"zip")

    def line(purges):
        return next(p for p in purges if p.category == "exports" and p.name is None)

    with db.transaction() as s:
        assert (line(retention_service.plan(s, settings=settings, now=now)).count,
                line(retention_service.plan(s, settings=settings, now=now)).blobs) == (1, 0)
        later = now + 3 * DAY
        retention_service.run(s, settings=settings, blobs=blobs, now=later)
    assert not blobs.exists(soon.blob_key)
    with db.transaction() as s:
        assert s.get(Export, soon.id).status == "expired"
    import sys

    monkeypatch.setitem(sys.modules, "imagen.privacy.exports", None)  # a build without the exports module
    with db.transaction() as s:
        skipped = line(retention_service.plan(s, settings=settings, now=now))
    assert (skipped.count, skipped.skipped, skipped.blobs) == (0, "no exports module", 0)
    assert skipped.setting == "IMAGEN_EXPORT_EXPIRY_DAYS"


def test_a_missing_table_purges_nothing_and_stray_inputs_report_the_runs_time(db, settings, blobs, monkeypatch):
    now = utcnow()
    with db.transaction() as s:
        inputs = next(p for p in retention_service.plan(s, settings=settings, blobs=blobs, now=now)
                      if p.category == "transient inputs")
        assert inputs.cutoff == now
    real = retention._tables()
    monkeypatch.setattr(retention, "_tables", lambda: {k: v for k, v in real.items() if k != "security_events"})
    with db.transaction() as s:
        line = next(p for p in retention_service.plan(s, settings=settings) if p.name == "security_events")
    assert (line.count, line.blobs, line.skipped) == (0, 0, "no security_events table")


def test_stopping_does_not_wait_for_a_stuck_run(db, settings, blobs, monkeypatch):
    release = threading.Event()
    started = threading.Event()

    def stuck(services):
        started.set()
        release.wait(30)
        return []

    monkeypatch.setitem(TASKS, "privacy.retention", dataclasses.replace(TASKS["privacy.retention"], fn=stuck))
    tasks = InProcessTasks(SimpleNamespace())
    tasks.start()
    scheduler = Scheduler(tasks, settings.model_copy(update={"retention_interval_hours": 0.0001}), run_at_start=())
    scheduler.start()
    try:
        assert started.wait(10)
        begun = time.monotonic()
        scheduler.stop(timeout=0.2)
        assert time.monotonic() - begun < 5 and scheduler._thread is None  # the run is in the task's thread
    finally:
        release.set()
        tasks.stop()
