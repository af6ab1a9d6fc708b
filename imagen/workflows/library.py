"""The workflow library: versioned definitions with typed parameters, loaded from data files.

Each definition becomes a pydantic model (extra fields forbidden, bounds enforced), so a bad request
is refused with the name of the field and the reason.
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

PYTHON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "checkpoint": str,
    "image": str,  # base64 PNG/JPEG/WebP; decoded and checked by the generation service
}


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["string", "integer", "number", "boolean", "enum", "checkpoint", "image"]
    label: str | None = None
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: list[str] | None = None


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    title: str
    description: str = ""
    families: list[str]
    parameters: list[Parameter]

    @cached_property
    def params_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for p in self.parameters:
            py_type = Literal[tuple(p.choices)] if p.type == "enum" and p.choices else PYTHON_TYPES[p.type]
            bounds = {
                "ge": p.minimum, "le": p.maximum, "multiple_of": p.multiple_of,
                "min_length": p.min_length, "max_length": p.max_length,
            }
            if p.type in ("integer", "boolean"):
                bounds["strict"] = True  # 1.5 is not a step count, "yes" is not a boolean
            constraints = Field(**{k: v for k, v in bounds.items() if v is not None})
            default = ... if p.required else p.default
            fields[p.name] = (Annotated[py_type, constraints], default)
        return create_model(
            f"{self.name}_params", __config__=ConfigDict(extra="forbid"), **fields
        )

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and check bounds; raises pydantic.ValidationError naming each bad field."""
        return self.params_model.model_validate(params).model_dump()

    def public_schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "families": self.families,
            "parameters": [p.model_dump(exclude_none=True) for p in self.parameters],
        }


class UnknownWorkflow(LookupError):
    pass


def _load_builtin() -> dict[str, Workflow]:
    found = {}
    for entry in resources.files("imagen.workflows").joinpath("builtin").iterdir():
        if entry.name.endswith(".json"):
            wf = Workflow.model_validate(json.loads(entry.read_text()))
            found[wf.name] = wf
    return found


class WorkflowLibrary:
    def __init__(self, workflows: dict[str, Workflow] | None = None) -> None:
        self._workflows = workflows if workflows is not None else _load_builtin()

    def list(self) -> list[Workflow]:
        return sorted(self._workflows.values(), key=lambda w: w.name)

    def get(self, name: str) -> Workflow:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflow(name) from None


library = WorkflowLibrary()

__all__ = ["Parameter", "UnknownWorkflow", "ValidationError", "Workflow", "WorkflowLibrary", "library"]
