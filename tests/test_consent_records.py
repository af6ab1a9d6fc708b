"""The consent service on its own (policy §3, §6, §11; docs/privacy.md): policy versions and who must accept them,
which writes wait for the acceptance, append-only records and the latest choice, regional defaults, and the exact
messages a refused request gets. Written from the mutation run of imagen/consent/service.py (docs/privacy.md,
"Mutation testing"); the API paths are covered by test_consent_centre.py.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from imagen.accounts.models import User
from imagen.consent.models import ConsentRecord, PolicyVersion
from imagen.consent.service import (
    CHOICES,
    consent_service,
    explicit_opt_in,
    parse_defaults,
    text_sha256,
)
from imagen.kit.db import utcnow
from imagen.kit.errors import Conflict, Forbidden, Unprocessable
from imagen.notifications.models import Notification

STANDARD = ("Please read the updated policy and accept it to keep creating. Until then you can still view, "
            "export or delete your data and change your consent choices.")


def add_user(s, email: str = "ada@example.com", country: str = "GB") -> User:
    user = User(email=email, password_hash="!", date_of_birth=date(1990, 1, 1), country=country)
    s.add(user)
    s.flush()
    return user


def field_problem(error: Unprocessable) -> tuple[list[str], str]:
    (problem,) = error.detail
    return problem["loc"], problem["msg"]


# --- helpers without a database ---


def test_opt_in_regions_and_operator_defaults():
    assert explicit_opt_in("de") and explicit_opt_in("GB") and explicit_opt_in("CH") and explicit_opt_in("NO")
    assert not explicit_opt_in("US") and not explicit_opt_in("br")
    assert parse_defaults(" marketing_emails , bogus,analytics,policy_acceptance,") == {"marketing_emails",
                                                                                      "analytics"}
    assert parse_defaults("") == frozenset()
    elsewhere = frozenset({"marketing_emails"})
    assert consent_service.default_for(country="US", purpose="marketing_emails", elsewhere=elsewhere) is True
    assert consent_service.default_for(country="US", purpose="analytics", elsewhere=elsewhere) is False
    assert consent_service.default_for(country="fr", purpose="marketing_emails", elsewhere=elsewhere) is False


def test_policy_text_fingerprint_is_its_sha256():
    assert text_sha256("Privacy policy") == hashlib.sha256(b"Privacy policy").hexdigest()


# --- policy versions ---


def test_the_first_version_is_recorded_once_and_later_ones_are_not_invented(db, caplog):
    with db.transaction() as s:
        first = consent_service.ensure_policy_version(s, version="2026-01-01", text="first text")
        assert (first.version, first.material, first.text_sha256) == ("2026-01-01", True, text_sha256("first text"))
        assert consent_service.ensure_policy_version(s, version="2026-01-01", text="changed") is first
        assert first.text_sha256 == text_sha256("first text")  # a recorded version is never rewritten
    with db.transaction() as s:
        consent_service.publish(s, version="2026-02-01", material=False, summary=None, text="second")
    with db.transaction() as s, caplog.at_level(logging.WARNING, logger="imagen.consent.service"):
        # A configured version that was recorded stays itself, though a newer one is current.
        assert consent_service.ensure_policy_version(s, version="2026-01-01", text="x").version == "2026-01-01"
        assert caplog.text == ""
        current = consent_service.ensure_policy_version(s, version="2026-09-09", text="configured, never published")
        assert current.version == "2026-02-01"
        assert s.scalar(select(func.count()).select_from(PolicyVersion)) == 2
    assert "2026-09-09" in caplog.text and "2026-02-01" in caplog.text


def test_the_newest_publication_is_current_and_ties_go_to_the_later_record(db):
    with db.transaction() as s:
        with pytest.raises(LookupError, match=r"^no privacy policy version has been recorded yet$"):
            consent_service.current_version(s)
        at = utcnow()
        s.add(PolicyVersion(version="a", published_at=at, text_sha256="x", created_at=at))
        s.add(PolicyVersion(version="b", published_at=at, text_sha256="x", created_at=at + timedelta(seconds=1)))
        # Recorded last, but published (dated) before the others.
        s.add(PolicyVersion(version="old", published_at=at - timedelta(days=1), text_sha256="x",
                            created_at=at + timedelta(seconds=2)))
    with db.transaction() as s:
        assert consent_service.current_version(s).version == "b"
        assert [v.version for v in consent_service.list_versions(s)][-1] == "old"


def test_publishing_checks_the_version_and_never_changes_one(db):
    with db.transaction() as s:
        for bad in ("", " ", "-starts-with-dash", "x" * 33, "has space", "slash/no"):
            with pytest.raises(Unprocessable) as refused:
                consent_service.publish(s, version=bad, material=False, summary=None, text="t")
            assert field_problem(refused.value) == (
                ["body", "version"], "use 1 to 32 letters, digits, dots, dashes or underscores, e.g. 2026-06-01")
        row, notified = consent_service.publish(s, version=" " + "v" * 32 + " ", material=False, summary="  ",
                                                text="t")
        assert (row.version, row.summary, row.material, notified) == ("v" * 32, None, False, 0)
        with pytest.raises(Conflict) as again:
            consent_service.publish(s, version="v" * 32, material=True, summary=None, text="other")
        assert again.value.detail == f"Policy version {'v' * 32!r} is already published; versions are never changed"


def test_a_material_change_notifies_everyone_with_its_summary(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        ada, bob = add_user(s), add_user(s, "bob@example.com")
        row, notified = consent_service.publish(s, version="2", material=True, summary="  We added a processor. ",
                                                text="t2")
        assert (notified, row.summary, row.material, row.text_sha256) == (2, "We added a processor.", True,
                                                                         text_sha256("t2"))
        _, quiet = consent_service.publish(s, version="3", material=True, summary=None, text="t3")
        assert quiet == 2
    with db.transaction() as s:
        notes = {(n.user_id, n.title): n for n in s.scalars(select(Notification))}
        assert len(notes) == 4
        for user in (ada, bob):
            first = notes[(user.id, "Our privacy policy has changed (version 2)")]
            assert (first.kind, first.body, first.link) == ("policy_changed", "We added a processor.\n\n" + STANDARD,
                                                            "/privacy")
            assert notes[(user.id, "Our privacy policy has changed (version 3)")].body == STANDARD


def test_only_material_versions_newer_than_the_acceptance_require_a_new_one(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s)
        status = consent_service.policy_status(s, user_id=user.id)
        assert (status.current.version, status.accepted_version, status.acceptance_required) == ("1", None, True)
        consent_service.accept_policy(s, user_id=user.id, version="1", source="signup")
        consent_service.publish(s, version="1.1", material=False, summary=None, text="typo fixed")
        status = consent_service.policy_status(s, user_id=user.id)
        assert (status.current.version, status.accepted_version, status.acceptance_required) == ("1.1", "1", False)
        consent_service.publish(s, version="2", material=True, summary=None, text="t2")
        # A refusal on record is not an acceptance.
        consent_service.record(s, user_id=user.id, purpose="policy_acceptance", granted=False, policy_version="2",
                               source="web")
        assert consent_service.policy_status(s, user_id=user.id).acceptance_required is True
        with pytest.raises(Unprocessable) as stale:
            consent_service.accept_policy(s, user_id=user.id, version="1", source="web")
        assert field_problem(stale.value) == (
            ["body", "version"],
            "Policy version '1' is not the current version '2'; read and accept the current policy")
        record = consent_service.accept_policy(s, user_id=user.id, version="2", source="web")
        assert (record.purpose, record.granted, record.policy_version, record.source) == (
            "policy_acceptance", True, "2", "web")
        s.flush()
        status = consent_service.policy_status(s, user_id=user.id)
        assert (status.accepted_version, status.acceptance_required) == ("2", False)
        # Someone else's acceptance is theirs alone.
        other = add_user(s, "bob@example.com")
        status = consent_service.policy_status(s, user_id=other.id)
        assert (status.accepted_version, status.acceptance_required) == (None, True)


def test_writes_wait_for_the_acceptance_but_privacy_functions_do_not(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s)
        consent_service.accept_policy(s, user_id=user.id, version="1", source="signup")
        s.flush()
        consent_service.require_policy_accepted(s, user_id=user.id, method="POST", path="/api/v1/generations")
        consent_service.publish(s, version="2", material=True, summary=None, text="t2")
        s.flush()
        for method in ("POST", "PUT", "PATCH"):
            with pytest.raises(Forbidden) as blocked:
                consent_service.require_policy_accepted(s, user_id=user.id, method=method, path="/api/v1/assets")
            assert blocked.value.detail == (
                "The privacy policy has changed (version 2). Read it at /privacy and accept it "
                '(POST /api/v1/me/policy-acceptance with {"version": "2"}) to continue. Until then '
                "you can still view, export or delete your data and change your consents.")
        exempt = [("GET", "/api/v1/generations"), ("DELETE", "/api/v1/assets/x"), ("HEAD", "/api/v1/assets"),
                  ("PATCH", "/api/v1/me"), ("POST", "/api/v1/me/consents"), ("POST", "/api/v1/auth/logout"),
                  ("POST", "/api/v1/admin/policy-versions"), ("POST", "/api/v1/cookie-consent"),
                  ("POST", "/api/v1/minor-reports"), ("POST", "/api/v1/privacy-requests"),
                  ("POST", "/api/v1/generations/abc/cancel")]
        for method, path in exempt:
            consent_service.require_policy_accepted(s, user_id=user.id, method=method, path=path)
        for path in ("/api/v1/medium", "/api/v1/authors", "/api/v1/administer", "/api/v1/generations/cancel-all"):
            with pytest.raises(Forbidden):
                consent_service.require_policy_accepted(s, user_id=user.id, method="POST", path=path)


# --- consent records ---


def test_records_are_appended_and_the_latest_per_purpose_counts(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s)
        with pytest.raises(ValueError, match="unknown consent purpose 'newsletter'"):
            consent_service.record(s, user_id=user.id, purpose="newsletter", granted=True, policy_version="1",
                                   source="web")
        first = consent_service.record(s, user_id=user.id, purpose="marketing_emails", granted=True,
                                       policy_version="1", source="signup")
        s.flush()
        second = consent_service.record(s, user_id=user.id, purpose="marketing_emails", granted=False,
                                        policy_version="1", source="web")
        s.flush()
        assert (second.purpose, second.granted, second.policy_version, second.source) == (
            "marketing_emails", False, "1", "web")
        assert [r.id for r in consent_service.history(s, user_id=user.id)] == [first.id, second.id]
        assert consent_service.current(s, user_id=user.id)["marketing_emails"].id == second.id
        assert consent_service.is_granted(s, user_id=user.id, purpose="marketing_emails") is False
        assert consent_service.is_granted(s, user_id=user.id, purpose="analytics") is False
        consent_service.record(s, user_id=user.id, purpose="analytics", granted=True, policy_version="1",
                               source="web")
        s.flush()
        assert consent_service.is_granted(s, user_id=user.id, purpose="analytics") is True
        assert s.scalar(select(func.count()).select_from(ConsentRecord)) == 3


def test_history_orders_records_made_at_the_same_moment_by_id(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s)
        at = utcnow()
        for rid, granted in (("b", True), ("a", False), ("c", True)):
            s.add(ConsentRecord(id=rid, user_id=user.id, purpose="analytics", granted=granted, policy_version="1",
                                source="web", created_at=at))
        s.flush()
        assert [r.id for r in consent_service.history(s, user_id=user.id)] == ["a", "b", "c"]
        assert consent_service.current(s, user_id=user.id)["analytics"].id == "c"


def test_choices_show_the_regional_default_until_one_is_made(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s, country="US")
        choices = consent_service.choices(s, user_id=user.id, country="US",
                                          elsewhere=frozenset({"marketing_emails"}))
        assert list(choices) == list(CHOICES)
        assert [(c.purpose, c.granted, c.chosen, c.source, c.policy_version, c.at) for c in choices.values()] == [
            ("model_improvement", False, False, None, None, None), ("marketing_emails", True, False, None, None, None),
            ("analytics", False, False, None, None, None)]
        record = consent_service.record(s, user_id=user.id, purpose="analytics", granted=True, policy_version="1",
                                        source="cookie_banner")
        s.flush()
        chosen = consent_service.choices(s, user_id=user.id, country="US", elsewhere=frozenset())["analytics"]
        assert (chosen.purpose, chosen.granted, chosen.chosen, chosen.source, chosen.policy_version, chosen.at) == (
            "analytics", True, True, "cookie_banner", "1", record.created_at)


def test_updating_choices_records_only_changes_under_the_current_version(db):
    with db.transaction() as s:
        consent_service.ensure_policy_version(s, version="1", text="t")
        user = add_user(s)
        with pytest.raises(ValueError) as unknown:
            consent_service.update_choices(s, user_id=user.id, changes={"policy_acceptance": True, "x": True},
                                           source="web")
        assert str(unknown.value) == "unknown consent purposes ['policy_acceptance', 'x']"
        # A choice for the last purpose alone, then an unchanged first one next to a changed last one.
        added = consent_service.update_choices(s, user_id=user.id, changes={"analytics": True}, source="web")
        assert [(r.purpose, r.granted, r.source, r.policy_version) for r in added] == [
            ("analytics", True, "web", "1")]
        consent_service.update_choices(s, user_id=user.id, changes={"model_improvement": False}, source="web")
        consent_service.publish(s, version="2", material=False, summary=None, text="t2")
        added = consent_service.update_choices(
            s, user_id=user.id, changes={"model_improvement": False, "marketing_emails": True, "analytics": False},
            source="consent_centre")
        assert [(r.purpose, r.granted, r.policy_version) for r in added] == [
            ("marketing_emails", True, "2"), ("analytics", False, "2")]
        assert consent_service.update_choices(s, user_id=user.id, changes={"analytics": False}, source="web") == []
        assert s.scalar(select(func.count()).select_from(ConsentRecord)) == 4
