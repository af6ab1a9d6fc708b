"""Prompt rules: refuse a prompt before it is queued. Pure (no database); `prompt_rules().check(...)`.

A rules file is JSON, `{"rules": [RULE, ...]}` (or a bare list). A RULE:

    {"id": "no-gore",                       # unique, [a-z0-9._-]
     "category": "graphic violence",        # shown to the user in the refusal
     "message": "...",                      # optional; the default names the category
     "applies_to": ["prompt"],              # "prompt" and/or "negative_prompt" (default: prompt only)
     "all_of": [GROUP, GROUP, ...],         # refused when every group has a hit ...
     "any_of": GROUP}                       # ... or when this group has a hit (at least one of the two)

A GROUP is a list of terms, or `{"name": ..., "terms": [...] | {"en": [...], "fr": [...]}, "patterns": [regex]}`;
the language keys make up the rule's `languages`. Terms match whole words on normalized text (NFKD, accents and
marks removed except ñ, casefolded, Cyrillic/Greek look-alikes folded, single letters spaced out joined,
leetspeak `4@ 8 3 1! 0 5$ 7+` and punctuation between letters tolerated, repeated letters tolerated). A Latin-script
term also matches its plural (-s, -es); a trailing `*` matches any ending; CJK terms match anywhere. Patterns are
Python regexes searched in the normalized text (write them lowercase, without accents).

Each text is checked on its own: a rule never combines the prompt with the negative prompt. The built-in rules
(`rules/builtin.json`) apply to the prompt only, because people write "child, teen" in negative prompts to keep
them out of an image; they cannot be disabled. Operators add rules with `IMAGEN_PROMPT_RULES_FILE`.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from imagen.kit.config import Settings

BUILTIN_RULES = Path(__file__).with_name("rules") / "builtin.json"

# Leetspeak and symbol substitutions per letter (applied to Latin-script terms).
LEET = {"a": "4@", "b": "8", "e": "3", "i": "1!|", "l": "1|", "o": "0", "s": "5$", "t": "7+", "g": "9"}
# Cyrillic and Greek letters that look like Latin ones (used for the Latin-folded view of a text).
LOOKALIKES = str.maketrans(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445\u0456\u0458\u0455"
    "\u0501\u0261\u03b1\u03b2\u03b5\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7",
    "abekmhopctyxijsdgabeikvoptux",
)
WORD_CHAR = r"0-9a-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"  # scripts with word boundaries
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")
# Three or more single letters spaced out ("l o l i", "s . e . x"), joined into one word. Two spaces, a comma or a
# semicolon end the word: "n u d e  c h i l d" gives "nude child".
_SPACE = r"(?:(?!\s\s)[^\w,;]){1,5}"
SPACED_LETTERS = re.compile(rf"(?<![{WORD_CHAR}])(?:[{WORD_CHAR}]{_SPACE}){{2,}}[{WORD_CHAR}](?![{WORD_CHAR}])")
SEPARATOR = r"(?:[^\w\s]|_){0,3}"  # punctuation between the letters of a term: l.o.l.i, s-e-x, k_i_d
_ENYE = "\ue000"  # keeps ñ through NFKD (Spanish niña/nina differ)


class PromptRulesError(ValueError):
    """A rules file that can't be used; the message says which file, rule and field."""


@dataclass(frozen=True)
class PromptRefusal:
    rule_id: str
    category: str
    message: str
    field: Literal["prompt", "negative_prompt"] = "prompt"


def normalize(text: str) -> str:
    """Casefold, fold compatibility forms (full-width, ligatures), strip accents and marks (not ñ)."""
    text = text.replace("ñ", _ENYE).replace("Ñ", _ENYE)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().replace(_ENYE, "ñ")
    return unicodedata.normalize("NFKC", text)


def _join_spaced(text: str) -> str:
    return SPACED_LETTERS.sub(lambda m: re.sub(r"[^" + WORD_CHAR + "]", "", m.group(0)), text)


def views(text: str) -> tuple[str, ...]:
    """The normalized text, and its Latin-folded variant when it differs ("sex" written with Cyrillic letters)."""
    native = _join_spaced(normalize(text))
    folded = _join_spaced(normalize(text).translate(LOOKALIKES))
    return (native,) if folded == native else (native, folded)


def term_regex(term: str) -> str:
    """The regex of one term (see the module docstring)."""
    term = normalize(term).strip()
    prefix = term.endswith("*")
    term = term.rstrip("*").strip()
    if CJK.search(term):
        return re.escape(term)
    parts = []
    for word in term.split():
        letters = []
        for ch in word:
            alts = LEET.get(ch, "")
            cls = f"[{re.escape(ch + alts)}]" if alts else re.escape(ch)
            letters.append(cls + "+" if ch.isalpha() else cls)
        parts.append(SEPARATOR.join(letters))
    body = r"[\W_]+".join(parts)
    latin = bool(re.fullmatch(r"[a-z0-9 ]+", term))
    end = "" if prefix else (r"(?:e?s)?" if latin else "") + rf"(?![{WORD_CHAR}])"
    return rf"(?<![{WORD_CHAR}])" + body + end


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    terms: list[str] | dict[str, list[str]] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns[{i}] {pattern!r} is not a valid regex: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _not_empty(self) -> _Group:
        terms = self.terms if isinstance(self.terms, list) else [t for ts in self.terms.values() for t in ts]
        if any(not t.strip().rstrip("*").strip() for t in terms):
            raise ValueError("empty term")
        if not terms and not self.patterns:
            raise ValueError("a group needs terms or patterns")
        return self

    @property
    def languages(self) -> list[str]:
        return list(self.terms) if isinstance(self.terms, dict) else []

    def compile(self) -> re.Pattern[str]:
        terms = self.terms if isinstance(self.terms, list) else [t for ts in self.terms.values() for t in ts]
        alternatives = [term_regex(t) for t in dict.fromkeys(terms)] + [f"(?:{p})" for p in self.patterns]
        return re.compile("|".join(alternatives))


def _group(value: object) -> object:
    return {"terms": value} if isinstance(value, list) else value


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    category: str = Field(min_length=1, max_length=120)
    message: str | None = None
    applies_to: list[Literal["prompt", "negative_prompt"]] = Field(default_factory=lambda: ["prompt"], min_length=1)
    all_of: list[_Group] = Field(default_factory=list)
    any_of: _Group | None = None

    @field_validator("all_of", mode="before")
    @classmethod
    def _shorthand_groups(cls, value: object) -> object:
        return [_group(v) for v in value] if isinstance(value, list) else value

    @field_validator("any_of", mode="before")
    @classmethod
    def _shorthand_any(cls, value: object) -> object:
        return _group(value)

    @model_validator(mode="after")
    def _has_condition(self) -> RuleSpec:
        if not self.all_of and self.any_of is None:
            raise ValueError("a rule needs all_of or any_of")
        return self


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rules: list[RuleSpec]


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    message: str
    applies_to: tuple[str, ...]
    languages: tuple[str, ...]
    all_of: tuple[re.Pattern[str], ...]
    any_of: re.Pattern[str] | None
    builtin: bool = False

    @classmethod
    def from_spec(cls, spec: RuleSpec, *, builtin: bool = False) -> Rule:
        groups = [*spec.all_of, *([spec.any_of] if spec.any_of else [])]
        languages = tuple(dict.fromkeys(lang for g in groups for lang in g.languages))
        message = spec.message or f"This prompt was refused ({spec.category}): it is not allowed on this service."
        return cls(spec.id, spec.category, message, tuple(spec.applies_to), languages,
                   tuple(g.compile() for g in spec.all_of), spec.any_of.compile() if spec.any_of else None, builtin)

    def matches(self, texts: tuple[str, ...]) -> bool:
        if self.any_of is not None and any(self.any_of.search(t) for t in texts):
            return True
        return bool(self.all_of) and all(any(g.search(t) for t in texts) for g in self.all_of)


def load_rules(path: Path, *, builtin: bool = False) -> list[Rule]:
    """Read and validate one rules file; `PromptRulesError` names the file, rule and field at fault."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptRulesError(f"prompt rules file {path}: cannot read it as JSON: {exc}") from None
    if isinstance(data, list):
        data = {"rules": data}
    try:
        parsed = _RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if len(err["loc"]) > 1 and err["loc"][0] == "rules" and isinstance(data.get("rules"), list):
                index = err["loc"][1]
                rule = data["rules"][index] if isinstance(index, int) else None
                if isinstance(rule, dict) and "id" in rule:
                    loc += f" (rule {rule['id']!r})"
            problems.append(f"{loc}: {err['msg']}")
        raise PromptRulesError(f"prompt rules file {path}:\n  " + "\n  ".join(problems)) from None
    return [Rule.from_spec(spec, builtin=builtin) for spec in parsed.rules]


class PromptRules:
    def __init__(self, rules: list[Rule]) -> None:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise PromptRulesError(f"prompt rule id {rule.id!r} is defined twice (built-in ids can't be reused)")
            seen.add(rule.id)
        self.rules = tuple(rules)

    @classmethod
    def load(cls, extra_file: Path | None = None) -> PromptRules:
        rules = load_rules(BUILTIN_RULES, builtin=True)
        if extra_file is not None:
            rules += load_rules(extra_file)
        return cls(rules)

    def check(self, prompt: str, negative_prompt: str = "") -> PromptRefusal | None:
        """The first rule the prompt (or negative prompt, for rules that apply to it) breaks, or None."""
        for field, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not text or not text.strip():
                continue
            texts = views(text)
            for rule in self.rules:
                if field in rule.applies_to and rule.matches(texts):
                    message = rule.message
                    if field == "negative_prompt":
                        message = message.replace("This prompt", "This negative prompt", 1)
                    return PromptRefusal(rule.id, rule.category, message, field)
        return None


_cache: dict[tuple[str, int], PromptRules] = {}
_lock = threading.Lock()


def prompt_rules(settings: Settings) -> PromptRules:
    """The built-in rules plus the operator's file; reloaded when the setting or the file changes."""
    path = settings.prompt_rules_file
    key = (str(path or ""), path.stat().st_mtime_ns if path and path.exists() else 0)
    with _lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = PromptRules.load(path)
        return _cache[key]
