"""The workflow library: versioned definitions with typed parameters, loaded from data files.

A definition (a JSON file in `builtin/`, or one an administrator publishes) names the pipeline the runtime
executes (`txt2img`, `img2img`, `inpaint`, `hires_fix`), the model families it accepts, and its parameters.
`Workflow.from_definition` checks a definition and lists every problem (`InvalidDefinition`); each pipeline
needs a fixed set of parameters with compatible types and bounds (`PIPELINE_PARAMETERS`).

Each definition becomes a pydantic model (extra fields forbidden, bounds enforced), so a bad request
is refused with the name of the field and the reason.

`WorkflowLibrary` holds the built-in definitions (every version that shipped, so a recorded
(name, version) still resolves); `imagen.workflows.service` adds the published ones from the database.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    model_validator,
)

from imagen.kit.errors import NotFound
from imagen.kit.inputs import INT32_MAX

PipelineKind = Literal["txt2img", "img2img", "inpaint", "hires_fix"]
Family = Literal["sd15", "sdxl"]
ParamType = Literal["string", "integer", "number", "boolean", "enum", "checkpoint", "image", "loras"]

MAX_LORAS = 8
LORA_WEIGHT_LIMIT = 4.0
# Base64 of a 20 MB image is ~26.7 M characters; the generation service decodes and checks the image itself.
MAX_IMAGE_CHARS = 28 * 1024 * 1024
MAX_CHECKPOINT_CHARS = 255
MAX_SEED = 2**32 - 1
MAX_PARAMETERS = 64

# Sampler names (what requests carry) and the labels A1111 users know.
SCHEDULERS: dict[str, str] = {
    "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM", "unipc": "UniPC", "lcm": "LCM",
}

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PARAM_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
STRUCTURE_ONLY = "imagen_structure_only"  # validation context key: skip the semantic checks

BOUNDED_TYPES = ("integer", "number")
LENGTH_TYPES = ("string", "checkpoint", "image", "loras")


class LoraRef(BaseModel):
    """One LoRA in a `loras` parameter: an asset id and its weight."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=64)]
    weight: Annotated[float, Field(ge=-LORA_WEIGHT_LIMIT, le=LORA_WEIGHT_LIMIT, allow_inf_nan=False)] = 1.0


Problem = dict[str, Any]  # pydantic-like: {"loc": [...], "msg": str, "type": str}


def _problem(loc: Iterable[str | int], msg: str) -> Problem:
    return {"loc": list(loc), "msg": msg, "type": "value_error"}


def _where(loc: Iterable[str | int]) -> str:
    return ".".join(map(str, loc)) or "definition"


class InvalidDefinition(ValueError):
    """A workflow definition that cannot be used; `problems` lists each one with where it is."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems))


class Parameter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=PARAM_NAME_PATTERN)]
    type: ParamType
    label: str | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    group: str | None = Field(default=None, max_length=32, description="form section, e.g. prompt, model, size")
    advanced: bool = Field(default=False, description="a form may fold it away by default")
    required: bool = False
    default: Any = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    multiple_of: Annotated[int, Field(gt=0)] | None = None
    min_length: Annotated[int, Field(ge=0)] | None = None
    max_length: Annotated[int, Field(ge=0)] | None = None
    choices: list[str] | None = None
    choice_labels: list[str] | None = None

    def annotation(self) -> Any:
        """The type (with bounds) a value of this parameter must have."""
        if self.type == "enum":
            return Literal[tuple(self.choices or ())]  # type: ignore[misc]
        if self.type == "integer":
            return Annotated[int, Field(strict=True, **_present(
                ge=self.minimum, le=self.maximum, multiple_of=self.multiple_of))]
        if self.type == "number":
            return Annotated[float, Field(allow_inf_nan=False, **_present(ge=self.minimum, le=self.maximum))]
        if self.type == "boolean":
            return Annotated[bool, Field(strict=True)]
        if self.type == "loras":
            limit = MAX_LORAS if self.max_length is None else min(self.max_length, MAX_LORAS)
            return Annotated[list[LoraRef], Field(max_length=limit, **_present(min_length=self.min_length))]
        if self.type == "image":  # base64 data, a data: URL, or "asset:<id>"; decoded by the generation service
            return Annotated[str, Field(
                min_length=max(self.min_length or 1, 1),
                max_length=MAX_IMAGE_CHARS if self.max_length is None else min(self.max_length, MAX_IMAGE_CHARS))]
        if self.type == "checkpoint":  # a built-in name or an asset id; resolved by the generation service
            return Annotated[str, Field(
                min_length=max(self.min_length or 1, 1),
                max_length=MAX_CHECKPOINT_CHARS if self.max_length is None
                else min(self.max_length, MAX_CHECKPOINT_CHARS))]
        return Annotated[str, Field(**_present(min_length=self.min_length, max_length=self.max_length))]

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.annotation())

    def check(self, value: Any) -> Any:
        """The value, validated and in JSON form; raises pydantic.ValidationError (loc relative to the value)."""
        return self.adapter.dump_python(self.adapter.validate_python(value), mode="json")

    def problems(self) -> list[Problem]:
        """What is inconsistent in this parameter's own declaration (loc relative to the parameter)."""
        found: list[Problem] = []

        def bad(field: str, msg: str) -> None:
            found.append(_problem([field], f"{self.name}: {msg}"))

        if self.type == "enum":
            if not self.choices:
                bad("choices", "an enum needs a non-empty list of choices")
            elif len(set(self.choices)) != len(self.choices):
                bad("choices", "each choice may be listed only once")
            elif any(not c for c in self.choices):
                bad("choices", "a choice may not be empty")
            if self.choice_labels is not None and len(self.choice_labels) != len(self.choices or ()):
                bad("choice_labels", "needs one label per choice")
        else:
            for field in ("choices", "choice_labels"):
                if getattr(self, field) is not None:
                    bad(field, f"only enum parameters take {field}, not {self.type}")
        if self.type not in BOUNDED_TYPES:
            for field in ("minimum", "maximum"):
                if getattr(self, field) is not None:
                    bad(field, f"only integer and number parameters take {field}, not {self.type}")
        elif self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            bad("minimum", f"minimum {self.minimum} is greater than maximum {self.maximum}")
        if self.multiple_of is not None and self.type != "integer":
            bad("multiple_of", f"only integer parameters take multiple_of, not {self.type}")
        if self.type not in LENGTH_TYPES:
            for field in ("min_length", "max_length"):
                if getattr(self, field) is not None:
                    bad(field, f"only {', '.join(LENGTH_TYPES)} parameters take {field}, not {self.type}")
        else:
            if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
                bad("min_length", f"min_length {self.min_length} is greater than max_length {self.max_length}")
            if self.type == "loras" and self.max_length is not None and self.max_length > MAX_LORAS:
                bad("max_length", f"at most {MAX_LORAS} LoRAs can be stacked")
        if found:
            return found  # the default cannot be judged against an inconsistent declaration
        if self.required:
            if self.default is not None:
                bad("default", "a required parameter takes no default")
        elif self.default is None:
            if self.type != "image":
                bad("default", "needs a default (or \"required\": true)")
        else:
            try:
                self.check(self.default)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                inner = f" ({_where(err['loc'])})" if err["loc"] else ""
                bad("default", f"default {self.default!r} is not valid{inner}: {err['msg']}")
        return found


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _present(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


@dataclass(frozen=True)
class Need:
    """What a pipeline needs of one parameter.

    `low`/`high`: the declared minimum/maximum must be present and inside [low, high] (what the runtime
    can do). `multiple_of`: the declared multiple_of must be a multiple of it. `choices`: the allowed choices.
    """

    type: str
    required: bool = False
    low: float | None = None
    high: float | None = None
    multiple_of: int | None = None
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = [self.type]
        if self.required:
            parts.append("required")
        if self.low is not None and self.high is not None:
            parts.append(f"bounds within {_num(self.low)}..{_num(self.high)}")
        if self.multiple_of:
            parts.append(f"multiple_of a multiple of {self.multiple_of}")
        return ", ".join(parts)


_SIZE = Need("integer", low=64, high=4096, multiple_of=8)
_COMMON: dict[str, Need] = {
    "prompt": Need("string"),
    "negative_prompt": Need("string"),
    "checkpoint": Need("checkpoint"),
    "loras": Need("loras"),
    "scheduler": Need("enum", choices=tuple(SCHEDULERS)),
    "steps": Need("integer", low=1, high=500),
    "guidance": Need("number", low=0, high=50),
    "seed": Need("integer", low=-1, high=MAX_SEED),
    "batch_size": Need("integer", low=1, high=16),
    "width": _SIZE,
    "height": _SIZE,
}
_STRENGTH = Need("number", low=0, high=1)
PIPELINE_PARAMETERS: dict[str, dict[str, Need]] = {
    "txt2img": _COMMON,
    "img2img": {**_COMMON, "init_image": Need("image", required=True), "strength": _STRENGTH},
    "inpaint": {**_COMMON, "init_image": Need("image", required=True), "mask_image": Need("image", required=True),
                "strength": _STRENGTH},
    "hires_fix": {**_COMMON, "hires_scale": Need("number", low=1, high=4),
                  "hires_steps": Need("integer", low=1, high=500), "hires_strength": _STRENGTH},
}


def _need_problems(p: Parameter, need: Need, pipeline: str) -> list[Problem]:
    found: list[Problem] = []

    def bad(field: str, msg: str) -> None:
        found.append(_problem([field], f"{p.name}: {msg}"))

    if p.type != need.type:
        bad("type", f"the {pipeline} pipeline needs type {need.type!r}, not {p.type!r}")
        return found
    if need.required and not p.required:
        bad("required", f"the {pipeline} pipeline needs this parameter to be required")
    if need.low is not None and need.high is not None:
        runtime_range = f"the runtime's range is {_num(need.low)}..{_num(need.high)}"
        if p.minimum is None or p.minimum < need.low:
            bad("minimum", f"declare a minimum of at least {_num(need.low)} ({runtime_range})")
        if p.maximum is None or p.maximum > need.high:
            bad("maximum", f"declare a maximum of at most {_num(need.high)} ({runtime_range})")
    if need.multiple_of and (p.multiple_of is None or p.multiple_of % need.multiple_of):
        bad("multiple_of", f"declare multiple_of as a multiple of {need.multiple_of}")
    if need.choices is not None:
        unknown = [c for c in p.choices or () if c not in need.choices]
        if unknown:
            bad("choices", f"unknown {'value' if len(unknown) == 1 else 'values'} "
                           f"{', '.join(map(repr, unknown))}; known: {', '.join(need.choices)}")
    return found


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: Annotated[int, Field(strict=True, ge=1, le=INT32_MAX)]  # an integer column
    title: Annotated[str, Field(min_length=1, max_length=100)]
    description: Annotated[str, Field(max_length=2000)] = ""
    pipeline: PipelineKind
    families: Annotated[list[Family], Field(min_length=1)]
    parameters: Annotated[list[Parameter], Field(min_length=1, max_length=MAX_PARAMETERS)]

    @model_validator(mode="after")
    def _usable(self, info: ValidationInfo) -> Workflow:
        if not (info.context or {}).get(STRUCTURE_ONLY):
            self.validate_definition()  # InvalidDefinition is a ValueError: pydantic reports it
        return self

    @classmethod
    def from_definition(cls, data: Any) -> Workflow:
        """Parse and check a definition (a dict, as in the JSON files); raises InvalidDefinition listing
        every problem, each with its location in the definition."""
        try:
            workflow = cls.model_validate(data, context={STRUCTURE_ONLY: True})
        except ValidationError as exc:
            raise InvalidDefinition([
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
            ]) from None
        workflow.validate_definition()
        return workflow

    def validate_definition(self) -> None:
        """Raise InvalidDefinition unless the pipeline gets every parameter it needs, and nothing else, with
        compatible types and bounds, and each parameter's default fits its own declaration."""
        if problems := self.definition_problems():
            raise InvalidDefinition(problems)

    def definition_problems(self) -> list[Problem]:
        found: list[Problem] = []
        if len(set(self.families)) != len(self.families):
            found.append(_problem(["families"], "each family may be listed only once"))
        needs = PIPELINE_PARAMETERS[self.pipeline]
        seen: dict[str, int] = {}
        for index, p in enumerate(self.parameters):
            loc = ["parameters", index]
            if p.name in seen:
                found.append(_problem([*loc, "name"], f"duplicate parameter name {p.name!r} "
                                                      f"(also parameters.{seen[p.name]})"))
                continue
            seen[p.name] = index
            own = p.problems()
            if p.name not in needs:
                own.append(_problem(["name"], f"{p.name}: the {self.pipeline} pipeline does not use a parameter "
                                              f"{p.name!r}; it takes: {', '.join(needs)}"))
            else:
                own += _need_problems(p, needs[p.name], self.pipeline)
            found += [{**problem, "loc": [*loc, *problem["loc"]]} for problem in own]
        for name, need in needs.items():
            if name not in seen:
                found.append(_problem(["parameters"], f"the {self.pipeline} pipeline needs a parameter "
                                                      f"{name!r} ({need.describe()})"))
        return found

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @cached_property
    def params_model(self) -> type[BaseModel]:
        fields: dict[str, Any] = {}
        for p in self.parameters:
            if p.required:
                fields[p.name] = (p.annotation(), ...)
            elif isinstance(p.default, list | dict):
                fields[p.name] = (p.annotation(), Field(default_factory=lambda d=p.default: copy.deepcopy(d)))
            else:
                fields[p.name] = (p.annotation(), p.default)
        return create_model(f"{self.name}_v{self.version}_params", __config__=ConfigDict(extra="forbid"), **fields)

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults and check bounds; raises pydantic.ValidationError naming each bad field."""
        return self.params_model.model_validate(params).model_dump(mode="json")

    def definition(self) -> dict[str, Any]:
        """The definition as JSON data (what a file holds and what publishing stores)."""
        return self.model_dump(mode="json", exclude_none=True)

    def public_schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "pipeline": self.pipeline,
            "families": list(self.families),
            "parameters": [p.model_dump(mode="json", exclude_none=True) for p in self.parameters],
        }


class UnknownWorkflow(NotFound, LookupError):
    """No workflow by that name (or no such version of it): a 404 when it reaches a request."""

    def __init__(self, name: str, version: int | None = None) -> None:
        self.name, self.version = name, version
        super().__init__(f"Unknown workflow {name!r}" if version is None
                         else f"Workflow {name!r} has no version {version}")


def load_builtin() -> list[Workflow]:
    """Every built-in definition, every version (files `builtin/*.json`)."""
    found: dict[tuple[str, int], str] = {}
    workflows = []
    for entry in sorted(resources.files("imagen.workflows").joinpath("builtin").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        try:
            wf = Workflow.from_definition(json.loads(entry.read_text()))
        except InvalidDefinition as exc:
            raise RuntimeError(f"built-in workflow {entry.name} is invalid: {exc}") from None
        if (wf.name, wf.version) in found:
            raise RuntimeError(f"built-in workflow {wf.name} v{wf.version} is defined twice "
                               f"({found[wf.name, wf.version]}, {entry.name})")
        found[wf.name, wf.version] = entry.name
        workflows.append(wf)
    return workflows


class WorkflowLibrary:
    """The built-in workflows, every version; `get(name)` is the latest."""

    def __init__(self, workflows: Iterable[Workflow] | dict[str, Workflow] | None = None) -> None:
        if workflows is None:
            workflows = load_builtin()
        elif isinstance(workflows, dict):
            workflows = workflows.values()
        self._versions: dict[str, dict[int, Workflow]] = {}
        for wf in workflows:
            self._versions.setdefault(wf.name, {})[wf.version] = wf

    def list(self) -> list[Workflow]:
        """The latest version of each workflow, by name."""
        return [self._versions[name][max(self._versions[name])] for name in sorted(self._versions)]

    def all(self) -> list[Workflow]:
        """Every version of every workflow, by name then version."""
        return [wf for name in sorted(self._versions) for _, wf in sorted(self._versions[name].items())]

    def latest_version(self, name: str) -> int | None:
        versions = self._versions.get(name)
        return max(versions) if versions else None

    def get(self, name: str, version: int | None = None) -> Workflow:
        versions = self._versions.get(name)
        if not versions:
            raise UnknownWorkflow(name)
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            raise UnknownWorkflow(name, version) from None


library = WorkflowLibrary()

__all__ = [
    "MAX_LORAS", "PIPELINE_PARAMETERS", "SCHEDULERS", "InvalidDefinition", "LoraRef", "Parameter",
    "UnknownWorkflow", "ValidationError", "Workflow", "WorkflowLibrary", "library",
]
