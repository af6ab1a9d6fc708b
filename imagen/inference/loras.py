"""LoRA adapters on a loaded base pipeline: loaded once, kept for later jobs, picked per job with `set_adapters`.

Each LoRA file becomes a PEFT adapter injected into the cached base pipeline's UNet and text encoder(s), named after
its content hash (`l<sha256>`: adapter names must be identifiers). Adapters stay loaded after the job, so a later job
with the same LoRA only re-weights (`set_adapters`), and switching LoRAs never reloads the checkpoint; past
`max_loaded` adapters per pipeline the least recently used ones are deleted. A job's set is activated with its
weights; adapters outside it are inactive. A job with no LoRA (or only weight-0 ones) runs with every LoRA layer
disabled, which PEFT implements as the base layer's forward alone, so its image is byte-for-byte the image of a
pipeline that never saw a LoRA.

Layouts: diffusers/PEFT (`unet.….lora_A.weight`) and Kohya / A1111 (`lora_unet_…`, `lora_te_…`, `lora_te1_…`/
`lora_te2_…` with `.alpha`), converted by diffusers' `load_lora_weights`.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagen.inference.spec import Family, ModelLoadError, ModelRef

DEFAULT_MAX_ADAPTERS = 16

LoraFileFn = Callable[[ModelRef], Path]  # a LoRA ref -> its local file, content hash already checked


def adapter_name(sha256: str) -> str:
    return f"l{sha256.lower()}"


@dataclass
class Activation:
    """What one job's LoRA set cost: which adapters had to be loaded from their files, and the seconds spent."""

    loaded_now: list[str] = field(default_factory=list)  # sha256 of the LoRAs read from disk for this job
    active: list[tuple[str, float]] = field(default_factory=list)  # (sha256, weight) in effect (weight != 0)
    seconds: float = 0.0


class AdapterManager:
    """The LoRA adapters loaded into one base pipeline (one per cached checkpoint; dropped with it)."""

    def __init__(self, pipe: Any, family: Family, *, max_loaded: int = DEFAULT_MAX_ADAPTERS) -> None:
        self.pipe = pipe
        self.family = family
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, str] = OrderedDict()  # sha256 -> adapter name, least recently used first
        self._lock = threading.Lock()
        self.loads = 0
        self.deletes = 0
        # The active set last applied, or None when unknown (after a load or delete changed PEFT's state): a job with
        # the same set as the one before skips the walk over every LoRA layer.
        self._applied: tuple[tuple[str, float], ...] | None = ()

    @property
    def loaded(self) -> list[str]:
        """sha256 of the LoRAs loaded in this pipeline, least recently used first."""
        return list(self._loaded)

    def activate(self, loras: tuple[ModelRef, ...] | list[ModelRef], lora_file: LoraFileFn) -> Activation:
        """Load what is missing, then make exactly `loras` (with their weights) the active set."""
        import time

        t0 = time.perf_counter()
        result = Activation()
        with self._lock:
            weights: dict[str, float] = {}
            refs: dict[str, ModelRef] = {}
            for ref in loras:
                if ref.kind != "lora":
                    raise ModelLoadError(f"{ref.name} is a {ref.kind}, not a LoRA")
                if ref.family != self.family:
                    raise ModelLoadError(
                        f"LoRA {ref.name} is for {_label(ref.family)} but the checkpoint is {_label(self.family)}")
                sha = ref.sha256.lower()
                weights[sha] = weights.get(sha, 0.0) + float(ref.weight)  # the same LoRA twice: weights add up
                refs.setdefault(sha, ref)
            for sha, ref in refs.items():
                if sha not in self._loaded:
                    self._load(sha, lora_file(ref))
                    result.loaded_now.append(sha)
                self._loaded.move_to_end(sha)
            self._evict(keep=set(refs))
            # Sorted by hash: LoRA deltas are summed in float, so a fixed order makes the same set (in any order in
            # the spec) give the same bytes.
            result.active = sorted((sha, w) for sha, w in weights.items() if w != 0.0)
            self._apply(result.active)
        result.seconds = time.perf_counter() - t0
        return result

    def _load(self, sha: str, path: Path) -> None:
        from safetensors.torch import load_file

        name = adapter_name(sha)
        try:
            state_dict = load_file(str(path))
        except Exception as exc:
            raise ModelLoadError(f"the LoRA file could not be read ({type(exc).__name__})") from exc
        before = self._adapters()
        self._applied = None
        try:
            with warnings.catch_warnings():  # PEFT warns that a second adapter joins the first: that is the design
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                self.pipe.load_lora_weights(state_dict, adapter_name=name, low_cpu_mem_usage=True)
        except Exception as exc:
            self._forget(name)
            raise ModelLoadError(f"the LoRA does not fit this checkpoint ({_short(exc)})") from exc
        if name not in self._adapters() - before:
            self._forget(name)
            raise ModelLoadError("the LoRA has no layers matching this checkpoint")
        self._loaded[sha] = name
        self.loads += 1

    def _adapters(self) -> set[str]:
        try:
            listed = self.pipe.get_list_adapters()
        except ValueError:
            return set()
        return {name for names in listed.values() for name in names}

    def _forget(self, name: str) -> None:
        """Remove whatever part of a failed load got injected (diffusers may have filled the UNet but not a TE)."""
        if name in self._adapters():
            # Best effort: the adapter is not in _loaded either way, so it is never activated.
            with contextlib.suppress(Exception):
                self.pipe.delete_adapters([name])

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next((sha for sha in self._loaded if sha not in keep), None)
            if victim is None:  # this job alone uses more than max_loaded: keep them all for now
                return
            self._applied = None
            self.pipe.delete_adapters([self._loaded.pop(victim)])
            self.deletes += 1

    def _apply(self, active: list[tuple[str, float]]) -> None:
        if self._applied == tuple(active):
            return
        if not active:
            if self._loaded or self._adapters():
                self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters([self._loaded[sha] for sha, _ in active], adapter_weights=[w for _, w in active])
        self._applied = tuple(active)

    def unload_all(self) -> None:
        with self._lock:
            if self._loaded:
                self.pipe.delete_adapters(list(self._loaded.values()))
                self._loaded.clear()
            self._applied = None


def _label(family: Family) -> str:
    return {"sd15": "SD 1.x", "sdxl": "SDXL"}.get(family, family)


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
