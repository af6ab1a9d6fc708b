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

The app's `Safety` (matcher, quarantine, settings, the task queue) is built once by the composition root
(imagen/services.py) and passed to each check. Without banks, a check costs a dict lookup (the matcher skips PDQ).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from imagen.kit.config import Settings
from imagen.kit.db import Database, new_id, run_after_rollback
from imagen.kit.errors import Unprocessable, field_error
from imagen.kit.http import REQUEST_IP
from imagen.kit.tasks import TaskQueue
from imagen.safety.matcher import HashMatcher
from imagen.safety.nsfw import NsfwClassifier, NsfwPolicy, nsfw_policy
from imagen.safety.prompt_rules import prompt_rules
from imagen.safety.quarantine import Quarantine
from imagen.safety.service import case_service

log = logging.getLogger(__name__)

NEUTRAL_UPLOAD = "This file cannot be accepted."
NEUTRAL_GENERATION = "This generation could not be completed."


class Blocked(Unprocessable):
    """A refused upload. The message never says why (which bank, or that a bank matched)."""

    def __init__(self) -> None:
        super().__init__(NEUTRAL_UPLOAD)


@dataclass
class Safety:
    matcher: HashMatcher
    settings: Settings
    quarantine: Quarantine
    tasks: TaskQueue | None = None  # automatic NCMEC reports are enqueued here after their case commits

    @property
    def nsfw(self) -> NsfwPolicy:
        return nsfw_policy(self.settings)


def build_safety(db: Database, blobs: Any, settings: Settings, tasks: TaskQueue | None = None) -> Safety:
    """Called once by the composition root: the matcher (shared by requests and the worker) and the quarantine.
    The NSFW policy and the prompt rules are read now, so a mistake in them stops the start naming the key."""
    nsfw_policy(settings)
    prompt_rules(settings)
    return Safety(HashMatcher.from_settings(db, settings), settings, Quarantine.from_settings(blobs, settings), tasks)


def _after_rollback(session: Session, write: Callable[[Session], Any]) -> None:
    """Run `write` in its own transaction once the request's transaction has rolled back."""
    engine = session.get_bind()

    def record() -> None:
        with Session(engine, expire_on_commit=False) as own:
            write(own)
            own.commit()

    run_after_rollback(session, record)


def _nsfw(png: bytes, safety: Safety, scores: list[float] | None = None) -> bytes | None:
    """The operator's NSFW policy: the bytes to store (blurred or not), or None when it blocks. When the detector
    runs, its highest score for the image is appended to `scores`."""
    policy = safety.nsfw
    if not policy.needs_detection:
        return png
    detections = NsfwClassifier().classify(png)
    if scores is not None:
        scores.append(max((d.score for d in detections), default=0.0))
    return policy.apply(png, policy.decide(detections))


def _quarantine_match(session: Session, ctx: Safety, *, user_id: str, data: bytes, match: Any,
                      source: str, subject_type: str, suspend: bool = True, **fields: Any) -> None:
    """An upload matched: encrypt it now, record the case after the rollback, refuse neutrally."""
    evidence_id = new_id()
    key = ctx.quarantine.put(evidence_id, data)
    ip_address = REQUEST_IP.get()  # the upload's own address and time (None from the CLI)

    def write(own: Session) -> None:
        case_service.record_hash_match(
            own, user_id=user_id, source=source, match=match, settings=ctx.settings, quarantine=ctx.quarantine,
            data=data, subject_type=subject_type, subject_id=None, quarantine_blob_key=key,
            evidence_id=evidence_id, suspend=suspend, ip_address=ip_address, tasks=ctx.tasks, **fields)

    _after_rollback(session, write)
    raise Blocked()


def screen_reference_image(safety: Safety, session: Session, *, user_id: str, original: bytes, png: bytes,
                           filename: str) -> bytes:
    """A reference image (an upload, or an inline `init_image`/`mask_image`): the PNG to store (maybe blurred).

    `original` is the file as received, before re-encoding: exact-hash banks list the bytes that circulate, which
    the re-encoded `png` never equals. Raises `Blocked` (quarantine, evidence, case and suspension follow)."""
    match = safety.matcher.match_image(original)
    if match is None and png != original:
        match = safety.matcher.match_image(png)
    if match is not None:
        _quarantine_match(session, safety, user_id=user_id, data=original, match=match, source="upload",
                          subject_type="reference_image", filename=filename[:300],
                          pdq=match.matched_value if match.hash_type == "pdq" else None,
                          content_type="application/octet-stream")
    out = _nsfw(png, safety)
    if out is None:
        raise Blocked()
    return out


def screen_model_file(safety: Safety, session: Session, *, user_id: str, sha256: str, path: Any, filename: str,
                      suspend: bool = True) -> None:
    """An uploaded checkpoint or LoRA: its SHA-256 against the sha256 banks; raises `Blocked`.

    `suspend=False` for the operator's own `imagen models add`: the case opens, the admin it is filed under
    keeps access (suspending the operator would lock them out of their moderation queue)."""
    match = safety.matcher.match_bytes_sha256(sha256)
    if match is not None:
        _quarantine_match(session, safety, user_id=user_id, data=path.read_bytes(), match=match,
                          source="model_upload", subject_type="model_file", filename=filename[:300],
                          content_type="application/octet-stream", suspend=suspend)


def screen_prompt(safety: Safety, session: Session, *, user_id: str, prompt: str, negative_prompt: str) -> None:
    """The prompt rules at submit: a 422 naming the category; the refusal is kept (its own transaction)."""
    refusal = prompt_rules(safety.settings).check(prompt or "", negative_prompt or "")
    if refusal is None:
        return
    _after_rollback(session, lambda own: case_service.record_refusal(
        own, user_id=user_id, refusal=refusal, prompt=prompt, negative_prompt=negative_prompt,
        settings=safety.settings))
    message = refusal.message
    if refusal.category.lower() not in message.lower():
        message = f"{message} (category: {refusal.category})"
    raise field_error(f"params.{refusal.field}", message)


def screen_outputs(safety: Safety, session: Session, *, gen: Any, images: list[Any],
                   nsfw_scores: list[float] | None = None) -> list[Any] | None:
    """A generation's outputs before they are stored: the images to store (maybe blurred), or None if blocked.
    `nsfw_scores`, when given, receives the detector's highest score per image (only when the policy runs it).

    On a hash match the evidence, case and suspension are written in this (the worker's) transaction.
    """
    for image in images:
        match = safety.matcher.match_image(image.png)
        if match is None:
            continue
        case_service.record_hash_match(
            session, user_id=gen.user_id, source="output", match=match, settings=safety.settings,
            quarantine=safety.quarantine, data=image.png, subject_type="generation", subject_id=gen.id,
            generation_id=gen.id, activity_at=gen.created_at, prompt=gen.params.get("prompt"),
            negative_prompt=gen.params.get("negative_prompt"), filename=f"{gen.id}-{image.seed}.png",
            content_type="image/png", pdq=match.matched_value if match.hash_type == "pdq" else None,
            tasks=safety.tasks)
        return None
    kept = []
    for image in images:
        out = _nsfw(image.png, safety, nsfw_scores)
        if out is None:
            return None
        kept.append(image if out is image.png else dataclasses.replace(image, png=out))
    return kept
