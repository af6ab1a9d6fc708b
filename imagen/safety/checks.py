"""What the upload and generation paths call before anything is stored for delivery.

- reference images, uploaded or sent inline as an img2img/inpaint input: hash banks (the bytes as received, then the
  re-encoded PNG: SHA-256, MD5, PDQ), then the NSFW policy (block: a neutral 422; blur: the blurred image is stored
  instead);
- model files: the SHA-256 banks;
- prompts, at submit: the prompt rules (422 naming the category; the refusal is recorded, repeated ones flag);
- generated outputs, in the worker before they are stored: hash banks, then the NSFW policy.

On a hash match the bytes are encrypted into quarantine at once. An upload's request then rolls back (the 422),
so its evidence, case and suspension are written in a transaction of their own once that rollback is done
(`run_after_rollback`); an output's are written in the worker's transaction, which fails the job.

`install` (the app's lifespan) registers one `HashMatcher` per database; a session finds it by its engine, so the
services need no new arguments. Without banks, a check costs a dict lookup (the matcher skips PDQ entirely).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, new_id, run_after_rollback
from imagen.kit.errors import Unprocessable, field_error
from imagen.safety.quarantine import Quarantine

log = logging.getLogger(__name__)

NEUTRAL_UPLOAD = "This file cannot be accepted."
NEUTRAL_GENERATION = "This generation could not be completed."


class Blocked(Unprocessable):
    """A refused upload. The message never says why (which bank, or that a bank matched)."""

    def __init__(self) -> None:
        super().__init__(NEUTRAL_UPLOAD)


@dataclass
class SafetyContext:
    matcher: Any  # imagen.safety.matcher.HashMatcher
    settings: Settings
    quarantine: Quarantine


_CONTEXTS: weakref.WeakKeyDictionary[Engine, SafetyContext] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def install(db: Database, blobs: Any, settings: Settings) -> SafetyContext:
    """Called once in the app's lifespan: the matcher (shared with the worker) and the quarantine."""
    from imagen.safety.matcher import get_matcher

    ctx = SafetyContext(get_matcher(db, settings), settings, Quarantine.from_settings(blobs, settings))
    with _LOCK:
        _CONTEXTS[db.engine] = ctx
    return ctx


def context_for(session: Session) -> SafetyContext | None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else getattr(bind, "engine", None)
    return _CONTEXTS.get(engine) if engine is not None else None


def context_for_db(db: Database) -> SafetyContext | None:
    """The running app's context for this database (scheduled work, which has no session yet)."""
    return _CONTEXTS.get(db.engine)


def _after_rollback(session: Session, write: Callable[[Session], Any]) -> None:
    """Run `write` in its own transaction once the request's transaction has rolled back."""
    engine = session.get_bind()

    def record() -> None:
        with Session(engine, expire_on_commit=False) as own:
            write(own)
            own.commit()

    run_after_rollback(session, record)


def _nsfw(png: bytes, settings: Settings | None) -> bytes | None:
    """The operator's NSFW policy: the bytes to store (blurred or not), or None when it blocks."""
    from imagen.safety.nsfw import NsfwClassifier, nsfw_policy

    policy = nsfw_policy(settings)
    if not policy.needs_detection:
        return png
    decision = policy.decide(NsfwClassifier().classify(png))
    return policy.apply(png, decision)


def _quarantine_match(session: Session, ctx: SafetyContext, *, user_id: str, data: bytes, match: Any,
                      source: str, subject_type: str, suspend: bool = True, **fields: Any) -> None:
    """An upload matched: encrypt it now, record the case after the rollback, refuse neutrally."""
    from imagen.kit.http import REQUEST_IP
    from imagen.safety.service import case_service

    evidence_id = new_id()
    key = ctx.quarantine.put(evidence_id, data)
    ip_address = REQUEST_IP.get()  # the upload's own address and time (None from the CLI)

    def write(own: Session) -> None:
        case_service.record_hash_match(
            own, user_id=user_id, source=source, match=match, settings=ctx.settings, quarantine=ctx.quarantine,
            data=data, subject_type=subject_type, subject_id=None, quarantine_blob_key=key,
            evidence_id=evidence_id, suspend=suspend, ip_address=ip_address, **fields)

    _after_rollback(session, write)
    raise Blocked()


def screen_reference_image(session: Session, *, user_id: str, original: bytes, png: bytes, filename: str) -> bytes:
    """A reference image (an upload, or an inline `init_image`/`mask_image`): the PNG to store (maybe blurred).

    `original` is the file as received, before re-encoding: exact-hash banks list the bytes that circulate, which
    the re-encoded `png` never equals. Raises `Blocked` (quarantine, evidence, case and suspension follow)."""
    ctx = context_for(session)
    if ctx is not None:
        match = ctx.matcher.match_image(original)
        if match is None and png != original:
            match = ctx.matcher.match_image(png)
        if match is not None:
            _quarantine_match(session, ctx, user_id=user_id, data=original, match=match, source="upload",
                              subject_type="reference_image", filename=filename[:300],
                              pdq=match.matched_value if match.hash_type == "pdq" else None,
                              content_type="application/octet-stream")
    out = _nsfw(png, ctx.settings if ctx else None)
    if out is None:
        raise Blocked()
    return out


def screen_model_file(session: Session, *, user_id: str, sha256: str, path: Any, filename: str,
                      suspend: bool = True) -> None:
    """An uploaded checkpoint or LoRA: its SHA-256 against the sha256 banks; raises `Blocked`.

    `suspend=False` for the operator's own `imagen models add`: the case opens, the admin it is filed under
    keeps access (suspending the operator would lock them out of their moderation queue)."""
    ctx = context_for(session)
    if ctx is None:
        return
    match = ctx.matcher.match_bytes_sha256(sha256)
    if match is not None:
        _quarantine_match(session, ctx, user_id=user_id, data=path.read_bytes(), match=match,
                          source="model_upload", subject_type="model_file", filename=filename[:300],
                          content_type="application/octet-stream", suspend=suspend)


def screen_prompt(session: Session, *, user_id: str, prompt: str, negative_prompt: str) -> None:
    """The prompt rules at submit: a 422 naming the category; the refusal is kept (its own transaction)."""
    from imagen.safety.prompt_rules import prompt_rules
    from imagen.safety.service import case_service

    ctx = context_for(session)
    refusal = prompt_rules(ctx.settings if ctx else None).check(prompt or "", negative_prompt or "")
    if refusal is None:
        return
    if ctx is not None:
        _after_rollback(session, lambda own: case_service.record_refusal(
            own, user_id=user_id, refusal=refusal, prompt=prompt, negative_prompt=negative_prompt,
            settings=ctx.settings))
    message = refusal.message
    if refusal.category.lower() not in message.lower():
        message = f"{message} (category: {refusal.category})"
    raise field_error(f"params.{refusal.field}", message)


def screen_outputs(session: Session, *, gen: Any, images: list[Any]) -> list[Any] | None:
    """A generation's outputs before they are stored: the images to store (maybe blurred), or None if blocked.

    On a hash match the evidence, case and suspension are written in this (the worker's) transaction.
    """
    from imagen.safety.service import case_service

    ctx = context_for(session)
    if ctx is not None:
        for image in images:
            match = ctx.matcher.match_image(image.png)
            if match is None:
                continue
            case_service.record_hash_match(
                session, user_id=gen.user_id, source="output", match=match, settings=ctx.settings,
                quarantine=ctx.quarantine, data=image.png, subject_type="generation", subject_id=gen.id,
                generation_id=gen.id, activity_at=gen.created_at, prompt=gen.params.get("prompt"),
                negative_prompt=gen.params.get("negative_prompt"), filename=f"{gen.id}-{image.seed}.png",
                content_type="image/png", pdq=match.matched_value if match.hash_type == "pdq" else None)
            return None
    kept = []
    for image in images:
        out = _nsfw(image.png, ctx.settings if ctx else None)
        if out is None:
            return None
        kept.append(image if out is image.png else dataclasses.replace(image, png=out))
    return kept
