"""Secrets at rest (docs/privacy.md, security): passwords as salted Argon2id, session tokens and API keys kept only
as SHA-256 hashes, tokens long and random, and no way in through a missing or broken password hash.
Written from the mutation run of imagen/accounts/security.py (docs/privacy.md, "Mutation testing").
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from imagen.accounts import security
from imagen.accounts.models import ApiKey, LoginSession, User
from imagen.accounts.security import (
    API_KEY_PREFIX,
    hash_password,
    new_api_key,
    new_token,
    token_hash,
    verify_password,
)
from tests.conftest import PASSWORD, signup

URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def test_passwords_are_salted_argon2id_and_verify():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first.startswith("$argon2id$") and first != second  # a fresh salt each time
    assert PASSWORD not in first and hashlib.sha256(PASSWORD.encode()).hexdigest() not in first
    assert verify_password(first, PASSWORD) and verify_password(second, PASSWORD)
    assert not verify_password(first, PASSWORD + "x")
    assert not verify_password(first, "")


def test_no_hash_or_a_broken_hash_never_lets_anyone_in():
    # Unknown accounts are checked against a dummy hash (same cost); even its own password must fail.
    assert not verify_password(None, "imagen-dummy-password")
    assert not verify_password(None, PASSWORD)
    assert not verify_password("", PASSWORD)
    assert not verify_password("not-an-argon2-hash", PASSWORD)
    assert not verify_password(hashlib.sha256(PASSWORD.encode()).hexdigest(), PASSWORD)


def test_unknown_account_costs_a_real_verification(monkeypatch):
    calls = []
    real = security._hasher

    class Spy:
        def verify(self, hash_, password):
            calls.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(security, "_hasher", Spy())
    assert not verify_password(None, PASSWORD)
    assert calls == [security._DUMMY_HASH] and calls[0].startswith("$argon2id$")


def test_tokens_are_long_random_and_url_safe():
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert URLSAFE.match(token) and len(token) == 43  # 32 random bytes
    assert len(new_token(24)) == 32 and len(new_token(8)) == 11


def test_token_hash_is_the_sha256_of_the_token():
    token = new_token()
    assert token_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token_hash(token) != token_hash(token + "x") and len(token_hash(token)) == 64


def test_api_keys_carry_the_prefix_and_32_random_bytes():
    keys = {new_api_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert key.startswith(API_KEY_PREFIX) and API_KEY_PREFIX == "imk_"
        assert len(key) == len("imk_") + 43 and URLSAFE.match(key[len("imk_"):])


def test_stored_secrets_are_hashes_of_what_the_user_holds(client, new_client, app):
    signup(client)
    token = client.cookies.get("imagen_session")
    r = client.post("/api/v1/api-keys", json={"name": "laptop"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    with app.state.services.db.transaction() as s:
        user = s.scalars(select(User)).one()
        assert user.password_hash.startswith("$argon2id$") and verify_password(user.password_hash, PASSWORD)
        login = s.scalars(select(LoginSession)).one()
        assert login.token_hash == token_hash(token) and token not in (login.token_hash, login.csrf_token)
        stored = s.scalars(select(ApiKey)).one()
        assert stored.key_hash == token_hash(key) and stored.prefix == key[:8]
    bearer = new_client()  # no cookie: the key alone
    assert bearer.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["email"] == user.email
    assert bearer.get("/api/v1/me", headers={"Authorization": f"Bearer {stored.key_hash}"}).status_code == 401
