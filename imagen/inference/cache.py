"""Loaded pipelines stay in memory between jobs, evicted least-recently-used past a byte budget.

An entry is whatever the loader returns (the runtime stores a `LoadedModel`: the base pipeline, the pipelines derived
from it with `from_pipe`, and the LoRA adapters injected into its modules). Evicting an entry drops all of that at
once: adapters live inside the pipeline's own UNet and text encoders, so nothing of them outlives it.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def pipeline_bytes(pipe: Any) -> int:
    """Bytes of every parameter and buffer of a pipeline's torch components (LoRA layers included once injected)."""
    total = 0
    for component in pipe.components.values():
        params = getattr(component, "parameters", None)
        if callable(params):
            total += sum(p.numel() * p.element_size() for p in params())
        buffers = getattr(component, "buffers", None)
        if callable(buffers):
            total += sum(b.numel() * b.element_size() for b in buffers())
    return total


class PipelineCache:
    def __init__(self, budget_bytes: int, size_of: Callable[[Any], int] = pipeline_bytes) -> None:
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # base loads only: switching LoRAs or deriving img2img/inpaint pipelines never counts
        self.evictions = 0

    def get_or_load(self, key: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """Return (entry, loaded_now)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0], False
        item = load()
        size = self._size_of(item)
        with self._lock:
            self.loads += 1
            self._items[key] = (item, size)
            self._items.move_to_end(key)
            self._evict_over_budget()
        return item, True

    def remeasure(self, key: str) -> None:
        """Re-count an entry's bytes after it grew or shrank in place (LoRA adapters loaded or deleted), then evict
        others past the budget; the entry itself (in use right now) stays."""
        with self._lock:
            if key not in self._items:
                return
            item, _ = self._items[key]
            self._items[key] = (item, self._size_of(item))
            self._items.move_to_end(key)
            self._evict_over_budget()

    def _evict_over_budget(self) -> None:
        dropped = False
        while len(self._items) > 1 and self.used_bytes > self.budget_bytes:
            _, (item, _) = self._items.popitem(last=False)
            close = getattr(item, "close", None)
            if callable(close):
                close()
            self.evictions += 1
            dropped = True
        if dropped:
            _release_memory()

    @property
    def used_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def peek(self, key: str) -> Any | None:
        """The entry under `key` without touching its recency (None when not loaded)."""
        with self._lock:
            found = self._items.get(key)
            return found[0] if found else None

    def clear(self) -> None:
        with self._lock:
            for item, _ in self._items.values():
                close = getattr(item, "close", None)
                if callable(close):
                    close()
            self._items.clear()
        _release_memory()


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
