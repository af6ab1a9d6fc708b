"""Passwords (argon2), random tokens and their hashes, the encryption of TOTP secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

_hasher = PasswordHasher()
# A hash to verify against when the email is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("imagen-dummy-password")

API_KEY_PREFIX = "imk_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Tokens are random and long, so a fast hash is enough to keep them useless if the table leaks."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def keyed_hash(secret: str, purpose: str, value: str) -> str:
    """HMAC with the app secret: emailed-link tokens and recovery codes, useless without the key if the table
    leaks (as the privacy-request codes)."""
    return hmac.new(secret.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _fernet(secret: str) -> Fernet:
    # A key of its own for TOTP secrets, derived from the app secret (rotating the secret disables 2FA enrolments).
    digest = hashlib.sha256(f"imagen-totp-secret:{secret}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret: str, value: str) -> str:
    return _fernet(secret).encrypt(value.encode()).decode()


def decrypt_secret(secret: str, value: str) -> str | None:
    try:
        return _fernet(secret).decrypt(value.encode()).decode()
    except InvalidToken:
        return None
