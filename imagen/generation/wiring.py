"""The generation side of the composition root: which runtime, executor and signals a process gets, by its role.

Embedded (`IMAGEN_EXECUTOR=local`): the web process runs jobs itself, one at a time, on the in-process executor.
RunPod (`IMAGEN_EXECUTOR=runpod`): the same in-process executor claims jobs fairly, but its runtime sends each one to
the serverless endpoint (imagen/executors/runpod.py) and stores what comes back; nothing is loaded here.
Fleet (`IMAGEN_EXECUTOR=celery`, imagen/fleet/): the web process routes tickets and wakes its streams from Redis (its
runtime only names and hashes the built-in checkpoints for submits; it never loads one); `imagen worker` runs them.
"""

from __future__ import annotations

from typing import Any

from imagen.executors.local import LocalExecutor
from imagen.generation.signals import GenerationSignals
from imagen.inference.runtime import Runtime


def attach_generation(services: Any, *, runtime: Runtime | None = None) -> None:
    settings = services.settings
    if settings.executor == "celery":
        _attach_fleet(services, runtime)
        return
    services.signals = GenerationSignals()
    if services.role != "web":
        return
    services.runtime = _runtime(services, runtime)
    services.executor = LocalExecutor(
        services.db, services.runtime, services.blobs, safety=services.safety, on_change=services.signals.notify,
        job_timeout_seconds=settings.job_timeout_seconds, stale_seconds=settings.job_stale_seconds,
        on_end=_derive_insights(services), previews=services.signals)
    services.run_executor = settings.worker_autostart  # off: tests drive the executor by hand


def _derive_insights(services: Any) -> Any:
    """After a job's end commits: its insights (imagen/insights/tasks.py), as background work of its own."""
    return lambda generation_id: services.tasks.enqueue("insights.derive", generation_id)


def _runtime(services: Any, runtime: Runtime | None) -> Any:
    settings = services.settings
    if runtime is None and settings.executor == "runpod":
        from imagen.executors.runpod import RunPodRuntime

        return RunPodRuntime.from_settings(settings, services.blobs)
    runtime = runtime or Runtime(settings.resolved_models_dir, device=settings.device,
                                 cache_bytes=settings.model_cache_bytes)
    # Uploaded models are read from this process's blob store (a runtime passed in, as in tests, is re-pointed).
    runtime.blob_path = services.blobs.local_path
    runtime.preview_every = settings.preview_every_steps
    return runtime


def _attach_fleet(services: Any, runtime: Runtime | None) -> None:
    from imagen.executors.celery import CeleryExecutor
    from imagen.fleet.registry import WorkerRegistry
    from imagen.fleet.routing import TicketRouter
    from imagen.fleet.worker import FleetWorker
    from imagen.generation.signals import CANCEL_CHANNEL, CHANGED_CHANNEL, RedisGenerationSignals

    settings = services.settings
    redis_url = settings.resolved_redis_url
    tick = min(settings.job_stale_seconds / 4, 5.0)
    registry = WorkerRegistry(redis_url, ttl_seconds=3 * tick)  # alive: refreshed every tick, gone after three
    router = TicketRouter(services.db, services.tasks, registry, affinity=settings.fleet_affinity)
    if services.role == "worker":
        services.signals = RedisGenerationSignals(redis_url, channels=(CANCEL_CHANNEL,))
        services.runtime = _runtime(services, runtime)
        services.executor = FleetWorker(db=services.db, runtime=services.runtime, blobs=services.blobs,
                                        safety=services.safety, signals=services.signals, registry=registry,
                                        router=router, settings=settings, on_end=_derive_insights(services))
        return
    web = services.role == "web"
    services.signals = RedisGenerationSignals(redis_url, channels=(CHANGED_CHANNEL,) if web else ())
    if web:
        services.runtime = _runtime(services, runtime)
    services.executor = CeleryExecutor(router, services.signals)
