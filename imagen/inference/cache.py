"""Loaded pipelines stay in memory between jobs, evicted least-recently-used past a byte budget."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def pipeline_bytes(pipe: Any) -> int:
    total = 0
    for component in pipe.components.values():
        params = getattr(component, "parameters", None)
        if callable(params):
            total += sum(p.numel() * p.element_size() for p in params())
    return total


class PipelineCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get_or_load(self, key: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """Return (pipeline, loaded_now)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0], False
        pipe = load()
        size = pipeline_bytes(pipe)
        with self._lock:
            self.loads += 1
            self._items[key] = (pipe, size)
            self._items.move_to_end(key)
            while len(self._items) > 1 and self.used_bytes > self.budget_bytes:
                self._items.popitem(last=False)
        return pipe, True

    @property
    def used_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
