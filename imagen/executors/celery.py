"""The fleet executor as the web process (and the CLI) sees it: a submitted job becomes a ticket on the broker, a
cancel goes out over Redis to the worker running the job. No inference here; the workers are imagen/fleet/worker.py.
"""

from __future__ import annotations

from imagen.fleet.routing import TicketRouter
from imagen.generation.signals import RedisGenerationSignals


class CeleryExecutor:
    def __init__(self, router: TicketRouter, signals: RedisGenerationSignals) -> None:
        self.router, self.signals = router, signals

    def start(self) -> None:
        self.signals.start()  # the web's streams wake on what the workers publish

    def stop(self) -> None:
        self.signals.stop()

    def submit(self, generation_id: str) -> None:
        self.router.submit(generation_id)

    def cancel(self, generation_id: str) -> None:
        # The row already says cancel_requested (the worker's next progress write sees it); this is the fast path.
        self.signals.publish_cancel(generation_id)

    def run_ticket(self, generation_id: str) -> None:
        raise RuntimeError("generation tickets run on `imagen worker`, not in this process")
