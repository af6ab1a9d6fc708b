"""Background work in one shape: named tasks that take ids, are safe to run twice, and are enqueued after commit.

A domain declares its tasks in its own `tasks.py`:

    @task("privacy.build_export")
    def build_export(services: Services, export_id: str) -> None: ...

    @periodic("privacy.tick", every=lambda settings: settings.privacy_jobs_interval_seconds)
    def tick(services: Services) -> None: ...

The function gets the running process's services (the composition root, imagen/services.py) and plain string ids,
so the same call works in the web process, in an `imagen worker` and in a test. One backend runs them: `InProcessTasks`
(the embedded default: a few threads beside the app) or Celery (imagen/fleet/). Periodic work has one scheduler:
`Scheduler` in-process, Celery beat in fleet mode; both read the same `@periodic` declarations.

The registry below is keyed by task name, as Celery's is: it describes code, not a running app.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from imagen.kit.db import run_after_commit

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"  # exports, erasures, mail, reports: CPU and I/O
GPU_QUEUE = "gpu"  # generations: one job at a time per worker

Every = Callable[[Any], float]  # settings -> seconds between runs (0 or less: never)


@dataclass(frozen=True)
class TaskDef:
    name: str
    fn: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    every: Every | None = None  # set for periodic tasks
    first: Every | None = None  # seconds before a periodic task's first run (default: one interval)


TASKS: dict[str, TaskDef] = {}


def _register(definition: TaskDef) -> None:
    existing = TASKS.get(definition.name)
    if existing is not None and existing.fn is not definition.fn:
        raise ValueError(f"task {definition.name!r} is declared twice")
    TASKS[definition.name] = definition


def task(name: str, *, queue: str = DEFAULT_QUEUE) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _register(TaskDef(name, fn, queue))
        return fn

    return register


def periodic(name: str, *, every: Every, first: Every | None = None,
             queue: str = DEFAULT_QUEUE) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A task the scheduler enqueues every `every(settings)` seconds (it takes no ids), the first time after
    `first(settings)` seconds (default: one interval)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        _register(TaskDef(name, fn, queue, every, first))
        return fn

    return register


def task_named(name: str) -> TaskDef:
    try:
        return TASKS[name]
    except KeyError:
        raise LookupError(f"no task named {name!r} (is its domain's tasks module imported?)") from None


def periodic_tasks() -> list[TaskDef]:
    return [t for t in TASKS.values() if t.every is not None]


def run_task(services: Any, name: str, *args: str) -> Any:
    """Run one task now, in this thread (what every backend ends up calling)."""
    return task_named(name).fn(services, *args)


def schedule(settings: Any) -> dict[str, float]:
    """Each periodic task's interval in seconds, those turned off (0 or less) left out: the one schedule both the
    in-process scheduler and Celery beat follow."""
    intervals = {t.name: float(t.every(settings)) for t in periodic_tasks() if t.every is not None}
    return {name: seconds for name, seconds in intervals.items() if seconds > 0}


def first_delay(name: str, settings: Any) -> float:
    definition = task_named(name)
    interval = float(definition.every(settings)) if definition.every else 0.0
    return float(definition.first(settings)) if definition.first else interval


class TaskQueue(Protocol):
    def enqueue(self, name: str, *args: str) -> None:
        """Hand the task to the backend; call only after the rows it reads have committed."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class JobControl(Protocol):
    """What runs generations, as the other domains see it: an erasure cancels the account's running jobs."""

    def cancel(self, generation_id: str) -> None: ...


def enqueue_after_commit(session: Session, tasks: TaskQueue | None, name: str, *args: str) -> None:
    """Enqueue once the caller's transaction commits (never, if it rolls back). Without a backend (a CLI command in
    the embedded mode) the work stays pending in its rows and the server's scheduled pass picks it up."""
    task_named(name)  # a misspelt name fails in the request, not later in a worker
    if tasks is not None:
        run_after_commit(session, tasks.enqueue, name, *args)


class PendingTasks:
    """No backend: enqueueing does nothing, the rows stay pending (the CLI in the embedded mode)."""

    def enqueue(self, name: str, *args: str) -> None:
        task_named(name)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class InlineTasks:
    """Runs each task at once in the enqueuing thread (after the commit that enqueued it): CLI commands that must
    finish their work before they exit, and tests."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def enqueue(self, name: str, *args: str) -> None:
        run_task(self.services, name, *args)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class InProcessTasks:
    """The embedded backend: a small thread pool per queue inside this process.

    A failed task is logged and dropped: every task is safe to run again, and the periodic pass that owns its kind of
    work (the privacy tick, the NCMEC retry, the mail retry) finds what it left undone.
    """

    def __init__(self, services: Any, *, threads: dict[str, int] | None = None) -> None:
        self.services = services
        self.threads = threads or {DEFAULT_QUEUE: 2}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._pending: set[Future[None]] = set()

    def start(self) -> None:
        with self._lock:
            self._stopping = False
            for queue, count in self.threads.items():
                if queue not in self._pools:
                    self._pools[queue] = ThreadPoolExecutor(count, thread_name_prefix=f"imagen-{queue}")

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def enqueue(self, name: str, *args: str) -> None:
        definition = task_named(name)
        with self._lock:
            pool = None if self._stopping else self._pools.get(definition.queue)
            if pool is not None:
                future = pool.submit(self._run, name, args)
                self._pending.add(future)
                future.add_done_callback(self._pending.discard)
                return
        log.info("task %s not run: its queue %r has no thread here (the scheduled pass picks its work up)", name,
                 definition.queue)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every task enqueued so far (and those they enqueued) has run; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait(list(self._pending), timeout=remaining)
        return True

    def _run(self, name: str, args: tuple[str, ...]) -> None:
        try:
            run_task(self.services, name, *args)
        except Exception:
            log.exception("task %s%s failed; it is safe to run again", name, list(args))


STARTUP_TASKS = ("privacy.resume",)  # enqueued once when a scheduler starts: work a restart interrupted


class Scheduler:
    """The in-process scheduler: enqueues each `@periodic` task every `every(settings)` seconds, the first time
    after `first(settings)` (default one interval); the tasks named in `run_at_start` once, at start."""

    def __init__(self, tasks: TaskQueue, settings: Any, *, run_at_start: tuple[str, ...] = STARTUP_TASKS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tasks, self.settings, self.clock = tasks, settings, clock
        self.run_at_start = run_at_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.due: dict[str, float] = {}

    def schedule(self) -> dict[str, float]:
        """Each periodic task's interval in seconds, those turned off (0) left out."""
        return schedule(self.settings)

    def start(self) -> None:
        if self._thread is not None:
            return
        now = self.clock()
        self.due = {name: now + first_delay(name, self.settings) for name in self.schedule()}
        for name in self.run_at_start:
            self.tasks.enqueue(name)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="imagen-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def tick(self) -> list[str]:
        """Enqueue what is due now; returns the names enqueued."""
        now, intervals, sent = self.clock(), self.schedule(), []
        for name, due in sorted(self.due.items(), key=lambda item: item[1]):
            if due <= now and name in intervals:
                self.due[name] = now + intervals[name]
                self.tasks.enqueue(name)
                sent.append(name)
        return sent

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            wait = min(self.due.values(), default=self.clock() + 60) - self.clock()
            self._stop.wait(max(0.05, min(wait, 60.0)))
