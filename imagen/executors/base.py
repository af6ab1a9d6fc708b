"""How a job reaches a runtime. Backends: local (in-process thread); Celery and RunPod come later."""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, generation_id: str) -> None:
        """Called after the job's row has committed; may be called twice for the same job."""

    def cancel(self, generation_id: str) -> None:
        """Called after a cancel or delete has committed."""
