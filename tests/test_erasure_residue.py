"""Erasure and the residue scan one by one, without the app (policy §7, §8.1; architecture invariant 5): the account
stops at once or after its grace period, who is due, the proof kept by salted hash, files deleted in batches, other
users' references scrubbed, and what the scan searches for, where, and what it lets pass. Written from the
mutation run of imagen/privacy/erasure.py and residue.py (docs/privacy.md, "Mutation testing");
test_privacy_core.py covers the end-to-end paths.
"""

from __future__ import annotations

from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from imagen.accounts.models import ApiKey, LoginSession, SecurityEvent, User
from imagen.generation.models import Generation, Output
from imagen.kit.db import new_id, utcnow
from imagen.kit.errors import Conflict, NotFound
from imagen.kit.tasks import InProcessTasks, PendingTasks
from imagen.privacy import erasure as erasure_module
from imagen.privacy.erasure import UNUSABLE_PASSWORD, erase_due, erase_user, erasure_service
from imagen.privacy.models import Erasure
from imagen.privacy.residue import MIN_LENGTH, Needles, needles_for, residue, scan, subject_hash

DAY = timedelta(days=1)


def add_user(s, email: str = "Ada@Example.com") -> User:
    user = User(email=email.lower(), password_hash="$argon2id$x", date_of_birth=date(1990, 1, 1), country="GB")
    s.add(user)
    s.flush()
    return user


def add_generation(s, user_id: str, status: str = "succeeded", models: list | None = None) -> Generation:
    gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                     params={"prompt": "a lighthouse"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64,
                     models=models or [], consent_model_improvement=False, status=status)
    s.add(gen)
    s.flush()
    return gen


# --- salted hashes and needles ---


def test_subject_hash_is_keyed_and_ignores_case_and_spaces():
    assert subject_hash("k1", " Ada@Example.com ") == subject_hash("k1", "ada@example.com")
    assert subject_hash("k1", "ada@example.com") != subject_hash("k2", "ada@example.com")
    assert len(subject_hash("k1", "x")) == 64 and subject_hash("k1", "x") != subject_hash("k1", "y")


def test_needles_are_lowercased_hashed_and_skip_short_or_repeated_identifiers():
    needles = needles_for(user_id="ABC123", email=" Ada@Example.COM ", secret="s",
                          identifiers={"ip_address": ["203.0.113.9", "::1", "203.0.113.9"],
                                       "user_agent": ["Firefox/1", "x" * MIN_LENGTH]})
    assert (needles.user_id, needles.email) == ("abc123", "ada@example.com")
    assert needles.terms == (
        ("id", "abc123"), ("email", "ada@example.com"), ("id_hash", subject_hash("s", "abc123")),
        ("email_hash", subject_hash("s", "ada@example.com")), ("ip_address", "203.0.113.9"),
        ("user_agent", "firefox/1"), ("user_agent", "x" * MIN_LENGTH))
    assert needles.kinds()["user_agent"] == ["firefox/1", "x" * MIN_LENGTH]
    bare = needles_for(user_id=None, email="a@b.c", secret=None)
    assert bare.terms == (("email", "a@b.c"),) and bare.user_id is None


def test_scan_needs_something_to_look_for(db, settings):
    with pytest.raises(ValueError, match="give a user id or an email"):
        scan(db.engine, None, needles=Needles(None, None, ()), settings=settings)


# --- the scan ---


def test_scan_finds_the_person_anywhere_and_lets_only_other_peoples_rows_keep_shared_identifiers(db, blobs,
                                                                                                  settings):
    with db.transaction() as s:
        ada, bob = add_user(s), add_user(s, "bob@example.com")
        for _ in range(7):
            s.add(SecurityEvent(user_id=ada.id, kind="login", ip_address="203.0.113.9", user_agent="Firefox/1"))
        s.add(SecurityEvent(user_id=bob.id, kind="login", ip_address="203.0.113.9", user_agent="Firefox/1"))
        s.add(SecurityEvent(user_id=bob.id, kind="note", user_agent=f"mentions {ada.email.upper()}"))
        ada_id, bob_id = ada.id, bob.id
    blobs.put(f"outputs/{ada_id}/g/0.png", b"x")
    blobs.put("misc/ada@example.com.txt", b"x")
    with db.transaction() as s:
        needles = erasure_module.gather(s, user_id=ada_id, secret="k")
    assert ("ip_address", "203.0.113.9") in needles.terms and ("user_agent", "firefox/1") in needles.terms
    found = {(f.store, f.where, f.needle): f for f in scan(db.engine, blobs, needles=needles, settings=settings)}
    events = found[("database", "security_events.ip_address", "ip_address")]
    assert events.count == 7 and len(events.samples) == 5 and not events.allowed  # bob's row is his
    assert found[("database", "security_events.user_id", "id")].count == 7
    assert found[("database", "security_events.user_agent", "email")].count == 1  # her email, in bob's row
    assert found[("database", "users.email", "email")].samples == [ada_id]
    assert ("blobs", f"outputs/{ada_id}/g/0.png", "id") in found
    assert ("blobs", "misc/ada@example.com.txt", "email") in found
    assert all(bob_id not in f.samples for f in found.values() if f.needle in ("ip_address", "user_agent"))
    assert residue(found.values()) == sorted(found.values(), key=lambda f: (f.allowed, f.store, f.where))


def test_a_hold_in_force_is_allowed_and_an_ended_one_is_residue(db, settings):
    now = utcnow()
    with db.transaction() as s:
        uid = add_user(s).id
        s.add(Erasure(user_id=uid, status="completed", subject_email_hash="e", subject_id_hash="i",
                      due_at=now, completed_at=now, hold_until=now + DAY))
    found = [f for f in scan(db.engine, None, user_id=uid, settings=settings, now=now)
             if f.where.startswith("erasures.")]
    assert [(f.where, f.allowed, f.reason) for f in found] == [
        ("erasures.user_id", False, "")]  # the hold empties user_id: it does not keep it
    with db.transaction() as s:
        s.add(Erasure(user_id=None, status="completed", subject_email_hash=subject_hash("k", "ada@example.com"),
                      subject_id_hash="i", due_at=now, completed_at=now, hold_until=now + DAY))
    needles = needles_for(user_id=None, email="ada@example.com", secret="k")
    held = [f for f in scan(db.engine, None, needles=needles, settings=settings, now=now)
            if f.where == "erasures.subject_email_hash"]
    assert [(f.allowed, f.count) for f in held] == [(True, 1)] and held[0].reason.startswith("legal hold: ")
    assert residue(held) == []
    later = [f for f in scan(db.engine, None, needles=needles, settings=settings, now=now + 2 * DAY)
             if f.where == "erasures.subject_email_hash"]
    assert [f.allowed for f in later] == [False] and later[0].reason.startswith("legal hold ended (")
    assert residue(later) == later


# --- the request and the account ---


def test_a_request_with_grace_waits_and_can_be_canceled_once(db, settings):
    grace = settings.model_copy(update={"erasure_grace_days": 14})
    with db.transaction() as s:
        user = add_user(s)
        s.add(LoginSession(user_id=user.id, token_hash="a" * 64, csrf_token="c", expires_at=utcnow() + DAY))
        before = utcnow()
        erasure = erasure_service.request(s, user=user, via="web" * 30, settings=grace)
        assert (erasure.status, erasure.via, erasure.user_id) == ("scheduled", ("web" * 30)[:64], user.id)
        assert before + timedelta(days=14) <= erasure.due_at <= utcnow() + timedelta(days=14)
        secret = grace.resolved_secret_key()
        assert (erasure.subject_email_hash, erasure.subject_id_hash) == (
            subject_hash(secret, user.email), subject_hash(secret, user.id))
        assert erasure_service.request(s, user=user, via="web", settings=grace) is erasure
        assert user.suspended_at is None and s.scalar(select(func.count()).select_from(LoginSession)) == 1
        assert erasure_service.find_by_subject(s, value=" ADA@example.com", settings=grace) == [erasure]
        assert erasure_service.find_by_subject(s, value=user.id, settings=grace) == [erasure]
        assert erasure_service.find_by_subject(s, value="bob@example.com", settings=grace) == []
        canceled = erasure_service.cancel(s, user_id=user.id)
        assert canceled.status == "canceled" and canceled.canceled_at is not None
        with pytest.raises(NotFound) as none:
            erasure_service.cancel(s, user_id=user.id)
        assert none.value.detail == "No account deletion is pending"


def test_a_request_without_grace_stops_the_account_at_once(db, settings):
    with db.transaction() as s:
        user = add_user(s)
        other = add_user(s, "bob@example.com")
        s.add(LoginSession(user_id=user.id, token_hash="a" * 64, csrf_token="c", expires_at=utcnow() + DAY))
        s.add(LoginSession(user_id=other.id, token_hash="b" * 64, csrf_token="c", expires_at=utcnow() + DAY))
        s.add(ApiKey(user_id=user.id, name="k", prefix="imk_abcd", key_hash="c" * 64))
        queued, running = add_generation(s, user.id, "queued"), add_generation(s, user.id, "running")
        done = add_generation(s, user.id, "succeeded")
        erasure = erasure_service.request(s, user=user, via="web", grace=False, settings=settings)
        assert erasure.status == "in_progress" and erasure.started_at is not None
        assert erasure.due_at <= utcnow()
        assert (user.password_hash, user.suspended_at is not None) == (UNUSABLE_PASSWORD, True)
        with pytest.raises(Conflict) as started:
            erasure_service.cancel(s, user_id=user.id)
        assert started.value.detail == "The deletion has already started and cannot be canceled"
    with db.transaction() as s:
        assert [ls.user_id for ls in s.scalars(select(LoginSession))] == [other.id]
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 0
        q, r, d = s.get(Generation, queued.id), s.get(Generation, running.id), s.get(Generation, done.id)
        assert (q.status, q.cancel_requested, q.finished_at is not None) == ("canceled", True, True)
        assert (r.status, r.cancel_requested) == ("running", True)
        assert (d.status, d.cancel_requested) == ("succeeded", False)


def test_who_is_due(db):
    now = utcnow()
    with db.transaction() as s:
        users = [add_user(s, f"u{i}@example.com").id for i in range(5)]
        rows = [("scheduled", now - 2 * DAY, None, users[0]), ("scheduled", now + DAY, None, users[1]),
                ("in_progress", now - DAY, now - DAY, users[2]), ("in_progress", now - 3 * DAY, now, users[3]),
                ("completed", now - 5 * DAY, now - 5 * DAY, users[4]), ("scheduled", now - 9 * DAY, None, None)]
        for status, due, started, uid in rows:
            s.add(Erasure(user_id=uid, status=status, due_at=due, started_at=started, subject_email_hash="e",
                          subject_id_hash="i"))
        s.add(Erasure(user_id=users[0], status="scheduled", due_at=now - DAY, subject_email_hash="e",
                      subject_id_hash="i"))  # asked twice: erased once
    with db.transaction() as s:
        assert erasure_service.due_user_ids(s, now=now) == [users[3], users[0], users[2]]  # by due date
        assert erasure_service.due_user_ids(s, now=now, only_started=True) == [users[3], users[2]]
        assert erasure_service.due_user_ids(s, now=now, started_before=now - DAY / 2) == [users[0], users[2]]
        assert erasure_service.due_user_ids(s, now=now - 3 * DAY) == [users[3], users[2]]


# --- carrying it out ---


def test_erasing_deletes_files_in_batches_scrubs_references_and_keeps_the_proof(db, blobs, settings, monkeypatch):
    monkeypatch.setattr(erasure_module, "BATCH", 2)
    with db.transaction() as s:
        user, other = add_user(s), add_user(s, "bob@example.com")
        gen = add_generation(s, user.id)
        for i in range(5):
            key = f"outputs/{user.id}/{gen.id}/{i}.png"
            blobs.put(key, b"png")
            s.add(Output(generation_id=gen.id, user_id=user.id, index=i, blob_key=key, width=8, height=8, seed=i,
                         size_bytes=3))
        theirs = add_generation(s, other.id, models=[
            {"sha256": "a" * 64, "blob_key": f"assets/{user.id}/lora.safetensors"},
            {"sha256": "b" * 64, "blob_key": f"assets/{other.id}/own.safetensors"}])
        untouched = add_generation(s, other.id, models=[{"sha256": "c" * 64, "blob_key": "assets/x/y"}])
        uid, other_id = user.id, other.id
    blobs.put(f"assets/{uid}/lora.safetensors", b"model")
    blobs.put(f"exports/{uid}/old.zip", b"zip")
    blobs.put(f"assets/{other_id}/own.safetensors", b"model")
    before = utcnow()
    summary = erase_user(db, blobs, None, uid, settings=settings, verify=True)
    assert summary["outputs"] == 5 and summary["shared_model_references"] == 1 and summary["account"] == 1
    assert summary["blobs"] == 2 and summary["residue"] == 0 and summary["findings"] == []
    assert list(blobs.keys(f"outputs/{uid}/")) == [] and blobs.exists(f"assets/{other_id}/own.safetensors")
    with db.transaction() as s:
        assert s.get(User, uid) is None and s.get(User, other_id) is not None
        assert s.get(Generation, theirs.id).models == [
            {"sha256": "a" * 64, "blob_key": None},
            {"sha256": "b" * 64, "blob_key": f"assets/{other_id}/own.safetensors"}]
        assert s.get(Generation, untouched.id).models == [{"sha256": "c" * 64, "blob_key": "assets/x/y"}]
        (proof,) = s.scalars(select(Erasure)).all()
        assert (proof.user_id, proof.status, proof.via) == (None, "completed", "operator")
        assert proof.summary["residue"] == 0 and proof.summary["outputs"] == 5
        days = settings.retention_erasure_log_days
        assert before + timedelta(days=days) <= proof.hold_until <= utcnow() + timedelta(days=days)
    assert erase_user(db, blobs, None, uid, settings=settings) == {}  # again: nothing left to do


def test_a_late_file_is_swept_and_due_erasures_run(db, blobs, settings):
    with db.transaction() as s:
        user = add_user(s)
        erasure_service.request(s, user=user, via="web", grace=False, settings=settings)
        uid = user.id
    assert erase_due(db, blobs, None, settings=settings) == [uid]
    blobs.put(f"outputs/{uid}/late/0.png", b"png")  # a job that finished after the erasure
    assert erase_user(db, blobs, None, uid, settings=settings) == {}
    assert list(blobs.keys(f"outputs/{uid}/")) == []
    assert erase_due(db, blobs, None, settings=settings) == []


def test_asking_again_without_grace_starts_a_scheduled_erasure_now(db, settings):
    grace = settings.model_copy(update={"erasure_grace_days": 14})
    with db.transaction() as s:
        user = add_user(s)
        first = erasure_service.request(s, user=user, via="web", settings=grace)
        assert first.status == "scheduled" and user.suspended_at is None
        again = erasure_service.request(s, user=user, via="web", grace=False, settings=grace)
        assert again is first and again.status == "in_progress" and again.due_at <= utcnow()
        assert user.password_hash == UNUSABLE_PASSWORD and user.suspended_at is not None


def test_due_dates_and_start_times_count_up_to_their_instant(db):
    now = utcnow()
    with db.transaction() as s:
        due, started = add_user(s, "a@example.com").id, add_user(s, "b@example.com").id
        s.add(Erasure(user_id=due, status="scheduled", due_at=now, subject_email_hash="e", subject_id_hash="i"))
        s.add(Erasure(user_id=started, status="in_progress", due_at=now - DAY, started_at=now,
                      subject_email_hash="e", subject_id_hash="i"))
    with db.transaction() as s:
        assert erasure_service.due_user_ids(s, now=now, started_before=now) == [started, due]


def test_proofs_for_one_person_are_listed_oldest_first(db, settings):
    secret, now = settings.resolved_secret_key(), utcnow()
    with db.transaction() as s:
        for when in (now, now - 2 * DAY, now - DAY):
            s.add(Erasure(user_id=None, status="completed", due_at=when, created_at=when,
                          subject_email_hash=subject_hash(secret, "ada@example.com"), subject_id_hash="i"))
    with db.transaction() as s:
        found = erasure_service.find_by_subject(s, value="ada@example.com", settings=settings)
        assert [e.created_at for e in found] == sorted(e.created_at for e in found) and len(found) == 3


class Executor:
    def __init__(self):
        self.canceled: list[str] = []

    def cancel(self, gen_id: str) -> None:
        self.canceled.append(gen_id)


def test_due_erasures_use_the_callers_executor_settings_and_start_time(db, blobs, settings):
    short = settings.model_copy(update={"retention_erasure_log_days": 3})
    now = utcnow()
    with db.transaction() as s:
        due, recent = add_user(s, "a@example.com"), add_user(s, "b@example.com")
        running = add_generation(s, due.id, "running")
        s.add(Erasure(user_id=due.id, status="in_progress", due_at=now - DAY, started_at=now - DAY,
                      subject_email_hash="e", subject_id_hash="i"))
        s.add(Erasure(user_id=recent.id, status="in_progress", due_at=now, started_at=now,
                      subject_email_hash="e", subject_id_hash="i"))
        due_id, recent_id = due.id, recent.id
    executor = Executor()
    assert erase_due(db, blobs, executor, settings=short, started_before=now - DAY / 2) == [due_id]
    assert executor.canceled == [running.id]
    with db.transaction() as s:
        proof = s.scalars(select(Erasure).where(Erasure.status == "completed")).one()
        assert now + timedelta(days=3) <= proof.hold_until <= utcnow() + timedelta(days=3)
        assert s.get(User, recent_id) is not None  # started after the cut-off: left to the run that started it


def test_the_check_after_an_erasure_searches_the_blob_store_too(db, blobs, settings):
    with db.transaction() as s:
        uid = add_user(s).id
    blobs.put(f"misc/{uid}/left-behind.txt", b"x")  # under no prefix the erasure sweeps
    summary = erase_user(db, blobs, None, uid, settings=settings, verify=True)
    assert summary["residue"] == 1 and [(f.store, f.where) for f in summary["findings"]] == [
        ("blobs", f"misc/{uid}/left-behind.txt")]
    with db.transaction() as s:
        assert s.scalars(select(Erasure)).one().summary["residue"] == 1


# --- every data-map entry, and the app's background context ---


def _filler(column):
    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, String, Text
    from sqlalchemy.types import TypeDecorator

    kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    if isinstance(kind, DateTime):
        return utcnow()
    if isinstance(kind, Date):
        return date(2000, 1, 1)
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
    from sqlalchemy import insert

    from imagen.models import Base

    table = Base.metadata.tables[name]
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


def test_every_data_map_entry_is_deleted_emptied_or_kept_as_declared(db, blobs, settings):
    from imagen.models import Base
    from imagen.privacy.datamap import DATA_MAP

    tables = Base.metadata.tables
    entries = [i for i in DATA_MAP if i.table and i.user_column and i.table not in ("users", "erasures")]
    rows: dict[str, dict[str, str]] = {}
    with db.transaction() as s:
        ada, bob = add_user(s), add_user(s, "bob@example.com")
        ada_id, bob_id = ada.id, bob.id
        for item in entries:
            part = {item.only[0]: item.only[1][0]} if item.only else {}
            mine = {"id": add_row(s, item.table, **{item.user_column: ada_id}, **part),
                    "theirs": add_row(s, item.table, **{item.user_column: bob_id}, **part)}
            if item.email_column and tables[item.table].c[item.user_column].nullable:
                mine["by_email"] = add_row(s, item.table, **{item.user_column: None,
                                                            item.email_column: "ADA@example.com"}, **part)
            rows[item.name] = mine
    summary = erase_user(db, blobs, None, ada_id, settings=settings)
    with db.transaction() as s:
        for item in entries:
            table = tables[item.table]
            pk = next(iter(table.primary_key.columns))

            def get(row_id, table=table, pk=pk):
                return s.execute(select(table).where(pk == row_id)).first()

            theirs = get(rows[item.name]["theirs"])
            assert theirs is not None and theirs._mapping[item.user_column] == bob_id, item.name
            for kind in ("id", "by_email"):
                if kind not in rows[item.name]:
                    continue
                left = get(rows[item.name][kind])
                if item.erasure == "delete":
                    assert left is None, (item.name, kind)
                else:
                    assert left is not None, (item.name, kind)
                    assert all(left._mapping[c] is None for c in item.anonymize), (item.name, kind)
            if item.erasure == "delete" and not item.file_column:
                # Sessions and API keys already went when the account stopped (ErasureService.start).
                stopped = item.table in ("login_sessions", "api_keys")
                assert summary[item.name] == (0 if stopped else len(rows[item.name]) - 1), item.name
            elif item.anonymize:
                assert summary[item.name] == len(rows[item.name]) - 1, item.name
        assert s.get(User, ada_id) is None and s.get(User, bob_id) is not None


def test_erasing_completes_the_existing_request_and_every_earlier_one(db, blobs, settings):
    now = utcnow()
    with db.transaction() as s:
        user = add_user(s)
        earlier = Erasure(user_id=user.id, status="canceled", via="web", due_at=now - 9 * DAY,
                          canceled_at=now - 8 * DAY, subject_email_hash="e", subject_id_hash="i")
        s.add(earlier)
        s.flush()
        erasure_service.request(s, user=user, via="web", settings=settings.model_copy(
            update={"erasure_grace_days": 14}))
        bob = add_user(s, "bob@example.com")
        theirs = Erasure(user_id=bob.id, status="scheduled", due_at=now + DAY, subject_email_hash="e2",
                         subject_id_hash="i2")
        s.add(theirs)
        uid = user.id
    summary = erase_user(db, blobs, None, uid, settings=settings)
    assert "residue" not in summary  # only checked when asked (verify)
    with db.transaction() as s:
        proofs = {e.id: e for e in s.scalars(select(Erasure))}
        assert len(proofs) == 3
        assert (proofs[theirs.id].user_id, proofs[theirs.id].hold_until, proofs[theirs.id].status) == (
            bob.id, None, "scheduled")  # someone else's request is not touched
        current = next(e for e in proofs.values() if e.id not in (earlier.id, theirs.id))
        assert (current.status, current.via, current.user_id) == ("completed", "web", None)
        assert current.started_at is not None and current.completed_at is not None
        assert current.completed_at <= utcnow() and current.hold_until is not None
        assert proofs[earlier.id].hold_until == current.hold_until and proofs[earlier.id].user_id is None


def test_a_started_erasure_cancels_only_the_persons_running_jobs(db, blobs, settings):
    with db.transaction() as s:
        user, other = add_user(s), add_user(s, "bob@example.com")
        mine = add_generation(s, user.id, "running")
        add_generation(s, user.id, "succeeded")
        add_generation(s, other.id, "running")
        s.add(Erasure(user_id=user.id, status="in_progress", due_at=utcnow(), started_at=utcnow(),
                      subject_email_hash="e", subject_id_hash="i"))
        uid = user.id
    executor = Executor()
    erase_user(db, blobs, executor, uid, settings=settings)
    assert executor.canceled == [mine.id]


def test_due_erasures_are_found_by_the_callers_clock(db, blobs, settings):
    with db.transaction() as s:
        user = add_user(s)
        erasure_service.request(s, user=user, via="web", settings=settings.model_copy(
            update={"erasure_grace_days": 1}))
        uid = user.id
    assert erase_due(db, blobs, None, settings=settings) == []
    assert erase_due(db, blobs, None, settings=settings, now=utcnow() + 2 * DAY) == [uid]


def test_the_check_after_an_erasure_ends_holds_by_the_callers_settings(db, blobs, settings):
    with db.transaction() as s:
        uid = add_user(s).id
        add_row(s, "privacy_requests", user_id=uid, email="ada@example.com", closed_at=utcnow() - 10 * DAY)
    short = settings.model_copy(update={"retention_privacy_requests_days": 5})
    summary = erase_user(db, blobs, None, uid, settings=short, verify=True)
    assert ("database", "privacy_requests.email") in {(f.store, f.where) for f in summary["findings"]}


def test_an_immediate_request_stops_jobs_at_commit_and_erases_in_the_background(db, blobs, settings):
    ctx_settings = settings.model_copy(update={"retention_erasure_log_days": 3, "secret_key": "y" * 40})
    executor = Executor()
    services = SimpleNamespace(db=db, blobs=blobs, settings=ctx_settings, executor=executor)
    with db.transaction() as s:
        user, other = add_user(s), add_user(s, "bob@example.com")
        running, queued = add_generation(s, user.id, "running"), add_generation(s, other.id, "queued")
        theirs_running = add_generation(s, other.id, "running")
        erasure = erasure_service.request(s, user=user, via="web", grace=False, settings=ctx_settings,
                                          tasks=PendingTasks(), jobs=executor)
        assert erasure.subject_id_hash == subject_hash(ctx_settings.resolved_secret_key(), user.id)
        assert executor.canceled == []  # only once the request has committed
        uid = user.id
    assert executor.canceled == [running.id]
    with db.transaction() as s:
        assert s.get(Generation, queued.id).status == "queued"  # someone else's jobs
        assert s.get(Generation, theirs_running.id).cancel_requested is False
        assert s.get(User, uid) is not None  # no backend to run it: the erasure waits for the next pass

    tasks = InProcessTasks(services)
    tasks.start()
    try:
        with db.transaction() as s:
            second = add_user(s, "cy@example.com")
            erasure_service.request(s, user=second, via="web", grace=False, settings=ctx_settings, tasks=tasks,
                                    jobs=executor)
            second_id = second.id
            blobs.put(f"outputs/{second_id}/g/0.png", b"png")
        assert tasks.wait_idle()
    finally:
        tasks.stop()
    assert list(blobs.keys(f"outputs/{second_id}/")) == []
    with db.transaction() as s:
        assert s.get(User, second_id) is None
        proof = s.scalars(select(Erasure).where(Erasure.status == "completed")).one()
        assert utcnow() + timedelta(days=2) < proof.hold_until <= utcnow() + timedelta(days=3)


def test_gather_reads_only_the_persons_rows_by_id_and_by_email(db):
    with db.transaction() as s:
        ada, bob = add_user(s), add_user(s, "bob@example.com")
        s.add(SecurityEvent(user_id=ada.id, kind="login", ip_address="198.51.100.1"))
        s.add(SecurityEvent(user_id=None, email="ADA@example.com", kind="login_failed", ip_address="198.51.100.2"))
        s.add(SecurityEvent(user_id=bob.id, kind="login", ip_address="198.51.100.3"))
        ada_id = ada.id
    with db.transaction() as s:
        needles = erasure_module.gather(s, user_id=ada_id, secret="k")
        ips = needles.kinds()["ip_address"]
        assert ips == ["198.51.100.1", "198.51.100.2"]  # bob's address is not hers
        assert ("id_hash", subject_hash("k", ada_id)) in needles.terms
        assert needles.email == "ada@example.com"
        unknown = erasure_module.gather(s, user_id=new_id())
        assert unknown.email is None and [k for k, _ in unknown.terms] == ["id"]


def test_rows_owned_by_email_count_as_that_persons(db, settings):
    with db.transaction() as s:
        add_user(s)
        s.add(SecurityEvent(user_id=None, email="bob@example.com", kind="login_failed", ip_address="198.51.100.7"))
        hers = SecurityEvent(user_id=None, email="ada@example.com", kind="login_failed", ip_address="198.51.100.7")
        s.add(hers)
    needles = needles_for(user_id=new_id(), email="ada@example.com", secret=None,
                          identifiers={"ip_address": ["198.51.100.7"]})
    found = [f for f in scan(db.engine, None, needles=needles, settings=settings)
             if f.where == "security_events.ip_address"]
    assert [(f.count, f.samples) for f in found] == [(1, [hers.id])]


def test_a_hold_on_part_of_a_table_keeps_only_that_part(db, settings):
    with db.transaction() as s:
        uid = add_user(s).id
        kept = add_row(s, "outbound_emails", user_id=None, to_address="ada@example.com", kind="privacy_request.code")
        other = add_row(s, "outbound_emails", user_id=None, to_address="ada@example.com", kind="account.notice")
    found = [f for f in scan(db.engine, None, user_id=uid, email="ada@example.com", settings=settings)
             if f.where == "outbound_emails.to_address"]
    assert sorted((f.allowed, f.samples[0]) for f in found) == sorted([(True, kept), (False, other)])


def test_the_proof_hash_is_stable_across_versions(settings):
    import hashlib
    import hmac

    expected = hmac.new(b"k1", b"imagen-erasure:ada@example.com", hashlib.sha256).hexdigest()
    assert subject_hash("k1", " Ada@Example.COM ") == expected  # proofs stored earlier must still be found


def test_an_underscore_in_an_address_is_a_character_not_a_wildcard(db, settings):
    with db.transaction() as s:
        s.add(SecurityEvent(user_id=None, kind="login_failed", email="a_b@example.com"))
        s.add(SecurityEvent(user_id=None, kind="login_failed", email="axb@example.com"))
        s.add(SecurityEvent(user_id=None, kind="login_failed", email="a%b@example.com"))
    for needle, count in (("a_b@example.com", 1), ("a%b@example.com", 1)):
        found = [f for f in scan(db.engine, None, email=needle, settings=settings)
                 if f.where == "security_events.email"]
        assert [f.count for f in found] == [count], needle


def test_scan_by_id_and_email_also_searches_their_hashes_and_names_rows_by_every_key(db, settings):
    now = utcnow()
    with db.transaction() as s:
        uid = add_user(s).id
        s.add(Erasure(user_id=None, status="completed", due_at=now, completed_at=now, hold_until=now + DAY,
                      subject_email_hash=subject_hash("k", "ada@example.com"), subject_id_hash="i"))
        request = add_row(s, "legal_requests")
        add_row(s, "legal_request_users", legal_request_id=request, user_id=uid)
    found = {f.where: f for f in scan(db.engine, None, user_id=uid, email="ada@example.com", secret="k",
                                      settings=settings, now=now)}
    assert found["erasures.subject_email_hash"].allowed
    assert found["legal_request_users.user_id"].samples == [f"{request}/{uid}"]
    with pytest.raises(ValueError) as nothing:
        scan(db.engine, None, settings=settings)
    assert str(nothing.value) == "give a user id or an email"


def test_the_newest_open_request_is_the_current_one(db):
    now = utcnow()
    with db.transaction() as s:
        uid = add_user(s).id
        for when in (now - DAY, now, now - 2 * DAY):
            s.add(Erasure(user_id=uid, status="scheduled", due_at=when, created_at=when, subject_email_hash="e",
                          subject_id_hash="i"))
    with db.transaction() as s:
        assert erasure_service.current(s, user_id=uid).created_at == now
