"""Workflows (built-in and published versions) and users' presets.

Built-in versions live in code (`builtin/*.json`), published ones in `published_workflows`; together they
are one library where a (name, version) never changes meaning once it exists, so every generation that
recorded it can be reproduced. Should a later release ship a built-in version this install already
published, the published one keeps that number (it is what the recorded generations used).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imagen.accounts.models import User
from imagen.kit.errors import Conflict, Unprocessable, field_error
from imagen.kit.scoped import get_owned, owned
from imagen.workflows.library import (
    STRUCTURE_ONLY,
    InvalidDefinition,
    UnknownWorkflow,
    Workflow,
    WorkflowLibrary,
    library,
)
from imagen.workflows.models import Preset, PublishedWorkflow

ASSET_IMAGE_PREFIX = "asset:"
MAX_PRESETS_PER_USER = 200
_PARSED_CACHE_SIZE = 256


class WorkflowService:
    def __init__(self, builtin: WorkflowLibrary = library) -> None:
        self.builtin = builtin
        # Published rows never change, so a parsed row can be kept by its id (ids are never reused).
        self._parsed: OrderedDict[str, Workflow] = OrderedDict()
        self._lock = threading.Lock()

    def _workflow(self, row: PublishedWorkflow) -> Workflow:
        with self._lock:
            wf = self._parsed.get(row.id)
            if wf is not None:
                self._parsed.move_to_end(row.id)
                return wf
        # Checked when it was published; only the structure is re-checked, so a stored version stays
        # usable (reproducible) even if a later release makes the definition rules stricter.
        wf = Workflow.model_validate(row.definition, context={STRUCTURE_ONLY: True})
        with self._lock:
            self._parsed[row.id] = wf
            while len(self._parsed) > _PARSED_CACHE_SIZE:
                self._parsed.popitem(last=False)
        return wf

    def list(self, session: Session) -> list[Workflow]:
        """The latest version of each workflow, built-in or published, by name."""
        latest = (select(PublishedWorkflow.name, func.max(PublishedWorkflow.version).label("version"))
                  .group_by(PublishedWorkflow.name).subquery())
        rows = session.scalars(select(PublishedWorkflow).join(latest, and_(
            PublishedWorkflow.name == latest.c.name, PublishedWorkflow.version == latest.c.version)))
        found = {wf.name: wf for wf in self.builtin.list()}
        for row in rows:
            if row.name not in found or row.version >= found[row.name].version:
                found[row.name] = self._workflow(row)
        return [found[name] for name in sorted(found)]

    def latest_version(self, session: Session, name: str) -> int | None:
        published = session.scalar(select(func.max(PublishedWorkflow.version)).where(PublishedWorkflow.name == name))
        versions = [v for v in (published, self.builtin.latest_version(name)) if v is not None]
        return max(versions) if versions else None

    def versions(self, session: Session, name: str) -> list[int]:
        """Every version of a workflow, oldest first."""
        published = session.scalars(select(PublishedWorkflow.version).where(PublishedWorkflow.name == name))
        builtin = [wf.version for wf in self.builtin.all() if wf.name == name]
        return sorted({*published, *builtin})

    def get(self, session: Session, name: str, version: int | None = None) -> Workflow:
        """A workflow by name: the latest version, or the one asked for; raises UnknownWorkflow (a 404)."""
        if version is None:
            version = self.latest_version(session, name)
            if version is None:
                raise UnknownWorkflow(name)
        row = session.scalars(select(PublishedWorkflow).where(
            PublishedWorkflow.name == name, PublishedWorkflow.version == version)).first()
        if row is not None:
            return self._workflow(row)
        return self.builtin.get(name, version)

    def source(self, workflow: Workflow) -> Literal["builtin", "published"]:
        try:
            return "builtin" if self.builtin.get(workflow.name, workflow.version) is workflow else "published"
        except UnknownWorkflow:
            return "published"

    def publish(self, session: Session, *, admin: User | None, definition: Any) -> Workflow:
        """Add a version: checked like a built-in; it must be newer than every existing version of that name.

        `admin` is None when an operator publishes from the command line."""
        try:
            wf = Workflow.from_definition(definition)
        except InvalidDefinition as exc:
            raise Unprocessable([{**p, "loc": ["body", *p["loc"]]} for p in exc.problems]) from None
        latest = self.latest_version(session, wf.name)
        if latest is not None and wf.version <= latest:
            raise Conflict(f"Workflow {wf.name!r} is already at version {latest}; "
                           f"publish this one as version {latest + 1} or higher")
        session.add(PublishedWorkflow(name=wf.name, version=wf.version, definition=wf.definition(),
                                      published_by=admin.id if admin is not None else None))
        try:
            session.flush()
        except IntegrityError:  # someone published the same version at the same moment
            raise Conflict(f"Workflow {wf.name!r} version {wf.version} already exists") from None
        return wf


workflow_service = WorkflowService()


class PresetService:
    """A user's own named defaults for one workflow: a partial set of its parameters."""

    def create(self, session: Session, *, user: User, name: str, workflow: str, params: dict[str, Any]) -> Preset:
        name = name.strip()
        if not name:
            raise field_error("name", "Give the preset a name")
        try:
            wf = workflow_service.get(session, workflow)
        except UnknownWorkflow:
            names = ", ".join(w.name for w in workflow_service.list(session))
            raise field_error("workflow", f"unknown workflow {workflow!r}; available: {names}") from None
        clean = self._check_params(wf, params)
        if session.scalars(owned(Preset, user.id).where(Preset.name == name)).first() is not None:
            raise Conflict(f"You already have a preset named {name!r}")
        count = session.scalar(select(func.count()).select_from(Preset).where(Preset.user_id == user.id)) or 0
        if count >= MAX_PRESETS_PER_USER:
            raise Conflict(f"You have {count} presets, the most one account may keep; delete some first")
        preset = Preset(user_id=user.id, name=name, workflow=wf.name, params=clean)
        session.add(preset)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"You already have a preset named {name!r}") from None
        return preset

    @staticmethod
    def _check_params(wf: Workflow, params: dict[str, Any]) -> dict[str, Any]:
        problems: list[dict[str, Any]] = []
        clean: dict[str, Any] = {}
        for key, value in params.items():
            loc = ["body", "params", key]
            p = wf.parameter(key)
            if p is None:
                problems.append({"loc": loc, "type": "extra_forbidden", "msg": (
                    f"{wf.name} has no parameter {key!r}; it takes: {', '.join(q.name for q in wf.parameters)}")})
                continue
            if p.type == "image" and not (isinstance(value, str) and value.startswith(ASSET_IMAGE_PREFIX)):
                problems.append({"loc": loc, "type": "value_error", "msg": (
                    "a preset keeps no image data; use \"asset:<id>\" of one of your reference images")})
                continue
            try:
                clean[key] = p.check(value)
            except ValidationError as exc:
                problems += [{"loc": [*loc, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                             for e in exc.errors(include_url=False)]
        if problems:
            raise Unprocessable(problems)
        return clean

    def list(self, session: Session, *, user: User) -> list[Preset]:
        return list(session.scalars(owned(Preset, user.id).order_by(Preset.name, Preset.id)))

    def get(self, session: Session, *, user: User, preset_id: str) -> Preset:
        return get_owned(session, Preset, preset_id, user.id, what="Preset")

    def delete(self, session: Session, *, user: User, preset_id: str) -> None:
        session.delete(self.get(session, user=user, preset_id=preset_id))
        session.flush()

    def apply(self, session: Session, *, user: User, preset_id: str, workflow_name: str,
              params: dict[str, Any]) -> dict[str, Any]:
        """The preset's values under the request's own: `{**preset.params, **params}` (not validated here)."""
        preset = self.get(session, user=user, preset_id=preset_id)
        if preset.workflow != workflow_name:
            raise field_error("preset", f"preset {preset.name!r} is for the {preset.workflow!r} workflow, "
                                        f"not {workflow_name!r}")
        return {**preset.params, **params}


preset_service = PresetService()
