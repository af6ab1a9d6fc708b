"""The Celery GPU fleet (IMAGEN_EXECUTOR=celery) on the machine's real Redis and PostgreSQL: claims, fairness shared
by every worker, the attempt token, the watchdog's requeue, the registry's affinity routing, signals across processes,
and the whole fleet end to end (`imagen serve`, two `imagen worker`, S3 on moto, one worker SIGKILLed mid-job).

Redis: IMAGEN_TEST_REDIS_URL (default redis://127.0.0.1:6379/11; the tests flush that database).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text, update

from imagen.accounts.models import User
from imagen.generation.models import Generation, Output
from imagen.generation.queue import FairQueue, SharedFairQueue
from imagen.generation.service import generation_service
from imagen.kit.db import Database, new_id, utcnow
from imagen.storage.local import LocalBlobStore
from tests.conftest import POLICY_VERSION, TINY, _truncate_postgres
from tests.live_server import REPO, LiveServer, signup
from tests.test_s3_storage import bucket, bucket_keys, s3_endpoint  # noqa: F401  moto's S3 server, a bucket

redis = pytest.importorskip("redis")
pytest.importorskip("celery")

REDIS_URL = os.environ.get("IMAGEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
BOUND = 120.0  # seconds: every wait below ends by then


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    finally:
        client.close()
    return REDIS_URL


def until(predicate: Any, what: str, timeout: float = BOUND, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what}")


# ---- the database side: claims, shared fairness, the attempt token, requeues ----

def _user(db: Database, email: str) -> str:
    with db.transaction() as s:
        user = User(email=email, password_hash="x", date_of_birth=utcnow().date().replace(year=1990),
                    country="GB", role="user")
        s.add(user)
        s.flush()
        return user.id


def _queued(db: Database, user_id: str, checkpoint: str = "a" * 64, *, age: float = 0.0) -> str:
    with db.transaction() as s:
        gen = Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=1, pipeline="txt2img",
                         params={"prompt": "x"}, checkpoint="imagen-tiny", checkpoint_sha256=checkpoint, models=[],
                         consent_model_improvement=False, status="queued",
                         created_at=utcnow() - timedelta(seconds=age))
        s.add(gen)
        return gen.id


def _claim(db: Database, fair: FairQueue, loaded: tuple[str, ...] = (), worker: str = "w") -> Generation | None:
    with db.transaction() as s:
        return generation_service.claim_next(s, fair=fair, loaded=loaded, worker=worker)


def test_two_workers_share_one_round_robin_through_the_database(db):
    a, b, c = (_user(db, f"{n}@example.com") for n in "abc")
    jobs = {u: [_queued(db, u, age=100 - i - 10 * n) for i in range(3)] for n, u in enumerate((a, b, c))}
    workers = [SharedFairQueue(), SharedFairQueue()]  # two processes: nothing in memory is shared
    order = []
    for i in range(9):
        gen = _claim(db, workers[i % 2], worker=f"w{i % 2}")
        order.append(gen.user_id)
        assert gen.attempt == 1 and gen.claimed_by == f"w{i % 2}"
    assert order == [a, b, c] * 3
    assert _claim(db, workers[0]) is None
    # A fresh worker (a restart) continues the rotation where the fleet left it: a was served longest ago.
    later = {u: _queued(db, u) for u in (c, a)}
    assert _claim(db, SharedFairQueue()).id == later[a]
    assert sorted(g for ids in jobs.values() for g in ids) == sorted(
        g for g in _ids(db, "running") if g not in later.values())


def _ids(db: Database, status: str) -> list[str]:
    with db.transaction() as s:
        return list(s.scalars(select(Generation.id).where(Generation.status == status)))


def test_a_loaded_checkpoint_wins_only_among_equally_fair_jobs(db):
    a, b = _user(db, "a@example.com"), _user(db, "b@example.com")
    a_cold = _queued(db, a, "c" * 64, age=30)
    a_warm = _queued(db, a, "w" * 64, age=20)
    b_warm = _queued(db, b, "w" * 64, age=10)
    fair = SharedFairQueue()
    assert _claim(db, fair, loaded=("w" * 64,)).id == a_warm  # a and b tied: a's warm job, not a's older cold one
    assert _claim(db, fair, loaded=("w" * 64,)).id == b_warm
    assert _claim(db, fair, loaded=("w" * 64,)).id == a_cold


def test_a_requeued_jobs_first_worker_can_neither_progress_nor_complete_nor_end_it(db, blobs: LocalBlobStore):
    user = _user(db, "a@example.com")
    gid = _queued(db, user)
    first = _claim(db, SharedFairQueue(), worker="dead")
    with db.transaction() as s:  # its worker went silent
        s.execute(update(Generation).where(Generation.id == gid).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    with db.transaction() as s:
        requeued, ended = generation_service.requeue_abandoned(
            s, silent_since=utcnow() - timedelta(seconds=60), max_attempts=3, blobs=blobs)
    assert (requeued, ended) == ([gid], [])
    second = _claim(db, SharedFairQueue(), worker="alive")
    assert (first.attempt, second.attempt) == (1, 2)
    with db.transaction() as s:  # the zombie wakes up: every write it tries is refused
        assert generation_service.record_progress(s, generation_id=gid, progress=0.5, attempt=1) is True
        assert generation_service.complete(s, generation_id=gid, images=[], signals={}, blobs=blobs, safety=None,
                                           attempt=1) == "superseded"
        generation_service.finish_unsuccessfully(s, generation_id=gid, status="failed", error="zombie", blobs=blobs,
                                                 attempt=1)
        assert generation_service.stop_running(s, generation_id=gid, blobs=blobs, attempt=1) == "superseded"
    with db.transaction() as s:
        gen = s.get(Generation, gid)
        assert (gen.status, gen.attempt, gen.claimed_by, gen.error, gen.progress) == ("running", 2, "alive", None, 0)
        assert generation_service.record_progress(s, generation_id=gid, progress=0.5, attempt=2) is False


def test_a_job_whose_workers_keep_dying_fails_after_its_attempts_saying_why(db, blobs: LocalBlobStore):
    gid = _queued(db, _user(db, "a@example.com"))
    for attempt in (1, 2):
        assert _claim(db, SharedFairQueue(), worker=f"w{attempt}").attempt == attempt
        with db.transaction() as s:  # claimed by a worker no longer in the registry, silent for a few seconds
            s.execute(update(Generation).values(heartbeat_at=utcnow() - timedelta(seconds=20)))
            requeued, ended = generation_service.requeue_abandoned(
                s, silent_since=utcnow() - timedelta(seconds=60), dead_workers=[f"w{attempt}"],
                dead_silent_since=utcnow() - timedelta(seconds=10), max_attempts=2, blobs=blobs)
        assert (requeued, ended) == (([gid], []) if attempt == 1 else ([], [gid]))
    with db.transaction() as s:
        gen = s.get(Generation, gid)
        assert gen.status == "failed" and "stopped reporting 2 times" in gen.error


def test_a_live_workers_job_is_not_requeued(db, blobs: LocalBlobStore):
    gid = _queued(db, _user(db, "a@example.com"))
    _claim(db, SharedFairQueue(), worker="alive")
    with db.transaction() as s:  # fresh heartbeat; another worker is dead, but not this job's
        requeued, ended = generation_service.requeue_abandoned(
            s, silent_since=utcnow() - timedelta(seconds=60), dead_workers=["other"],
            dead_silent_since=utcnow() - timedelta(seconds=10), max_attempts=3, blobs=blobs)
    assert (requeued, ended) == ([], [])
    assert _ids(db, "running") == [gid]


# ---- Redis: the registry's routing, signals across processes ----

def test_an_idle_worker_with_the_checkpoint_is_reserved_once(redis_url):
    from imagen.fleet.registry import WorkerRegistry

    registry = WorkerRegistry(redis_url, ttl_seconds=30)
    registry.publish("w1", queue="gpu.w1", loaded={"x" * 64}, idle=True)
    registry.publish("w2", queue="gpu.w2", loaded={"y" * 64}, idle=True)
    registry.publish("w3", queue="gpu.w3", loaded={"x" * 64}, idle=False)
    assert registry.reserve("x" * 64, "job1").name == "w1"
    assert registry.reserve("x" * 64, "job2") is None  # w1 is taken, w3 busy: the shared queue
    assert registry.reserve("z" * 64, "job3") is None  # nobody has it loaded
    registry.publish("w1", queue="gpu.w1", loaded={"x" * 64}, idle=True)
    assert registry.reserve("x" * 64, "job4") is None  # its routed ticket is still waiting: not idle yet
    registry.busy("w1", took="job1")
    assert registry.forget("w1") == []  # job1 taken; nothing routed is lost with it... unless not taken:
    registry.publish("w2", queue="gpu.w2", loaded={"y" * 64}, idle=True)
    assert registry.reserve("y" * 64, "job5").name == "w2"
    registry.redis.delete("imagen:fleet:worker:w2")  # its presence expired: it died
    assert "w2" in registry.dead() and registry.forget("w2") == ["job5"]


def test_signals_cross_processes_through_redis(redis_url):
    """The web's streams wake on a worker's progress; a cancel reaches the worker (two objects, as two processes)."""
    import asyncio

    from imagen.generation.signals import CANCEL_CHANNEL, CHANGED_CHANNEL, RedisGenerationSignals

    web = RedisGenerationSignals(redis_url, channels=(CHANGED_CHANNEL,))
    worker = RedisGenerationSignals(redis_url, channels=(CANCEL_CHANNEL,))
    canceled: list[str] = []
    worker.on_cancel = canceled.append
    web.start()
    worker.start()

    async def wait_for_wake() -> bool:
        web.bind(asyncio.get_running_loop())
        event = web.listen("g1")
        until(lambda: web.redis.pubsub_numsub(CHANGED_CHANNEL)[0][1] > 0, "the web subscribed")
        worker.notify("g1")  # the worker committed progress
        await web.wait(event, BOUND)
        return event.is_set()

    try:
        assert asyncio.run(wait_for_wake()) and web.received >= 1
        until(lambda: worker.redis.pubsub_numsub(CANCEL_CHANNEL)[0][1] > 0, "the worker subscribed")
        web.publish_cancel("g1")
        until(lambda: canceled == ["g1"], "the cancel reached the worker")
    finally:
        web.stop()
        worker.stop()


def test_beat_schedules_every_periodic_task_on_its_interval(settings):
    import imagen.services  # noqa: F401  every domain's tasks
    from imagen.fleet.commands import beat_schedule
    from imagen.kit.tasks import periodic_tasks

    schedule = beat_schedule(settings)
    expected = {t.name: float(t.every(settings)) for t in periodic_tasks() if float(t.every(settings)) > 0}
    assert expected and {name: entry["schedule"] for name, entry in schedule.items()} == expected
    assert all(entry["task"] == name for name, entry in schedule.items())


# ---- the whole fleet ----

class Worker:
    """`imagen worker` in a child process, its output in a log file."""

    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name, self.log_path = name, log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imagen.cli", "worker", "--name", name, "--queues", "gpu,default"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def fleet(tmp_path: Path, postgres_migrated: str, models_dir: Path, runtime: Any, redis_url: str,
          s3_endpoint: str, bucket: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    _truncate_postgres(postgres_migrated)
    env = {
        "IMAGEN_DATABASE_URL": postgres_migrated, "IMAGEN_MODELS_DIR": str(models_dir),
        "IMAGEN_POLICY_VERSION": POLICY_VERSION, "IMAGEN_EXECUTOR": "celery", "IMAGEN_BROKER_URL": redis_url,
        "IMAGEN_JOB_STALE_SECONDS": "8", "IMAGEN_STORAGE": "s3", "IMAGEN_S3_BUCKET": bucket,
        "IMAGEN_S3_ENDPOINT_URL": s3_endpoint, "IMAGEN_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "imagen-test-key", "AWS_SECRET_ACCESS_KEY": "imagen-test-secret",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "absent"),
    }
    server = LiveServer(data_dir=tmp_path / "web", env=env, log=tmp_path / "serve.log")
    workers: list[Worker] = []
    try:
        server.start()
        for name in ("fleet-a", "fleet-b"):  # each machine its own data folder: only S3 and PostgreSQL are shared
            worker_env = {**server.env, "IMAGEN_DATA_DIR": str(tmp_path / name)}
            workers.append(Worker(name, worker_env, tmp_path / f"{name}.log"))
        from imagen.fleet.registry import WorkerRegistry

        registry = WorkerRegistry(redis_url, ttl_seconds=30)
        until(lambda: {w.name for w in registry.workers()} == {"fleet-a", "fleet-b"}
              or any(w.process.poll() is not None for w in workers), "both workers registered")
        for worker in workers:
            assert worker.process.poll() is None, worker.log_tail()
        yield {"server": server, "workers": workers, "db": postgres_migrated, "bucket": bucket,
               "s3": s3_endpoint}
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def _events(url: str, headers: dict[str, str], gen_id: str, into: list[tuple[str, dict]]) -> threading.Thread:
    def read() -> None:
        with httpx.stream("GET", f"{url}/api/v1/generations/{gen_id}/events", headers=headers, timeout=BOUND) as r:
            name = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    into.append((name, json.loads(line[6:])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def test_fleet_survives_a_worker_killed_mid_job(fleet):
    server, workers = fleet["server"], fleet["workers"]
    users = [signup(server.url, f"user{i}@example.com", POLICY_VERSION) for i in range(3)]
    auth = [{"Authorization": f"Bearer {u['api_key']}"} for u in users]

    def submit(i: int, **params: Any) -> str:
        r = httpx.post(f"{server.url}/api/v1/generations", headers=auth[i], timeout=30,
                       json={"workflow": "txt2img", "params": {"prompt": "a fox", **TINY, **params}})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    long_job = submit(0, steps=150, width=128, height=128, batch_size=2)
    events: list[tuple[str, dict]] = []
    reader = _events(server.url, auth[0], long_job, events)
    jobs = {long_job: 0}
    for i in (1, 2, 0, 1, 2):
        jobs[submit(i, seed=len(jobs))] = i

    engine = create_engine(fleet["db"])

    def running_on() -> str | None:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT claimed_by, progress FROM generations WHERE id = :id AND "
                                    "status = 'running'"), {"id": long_job}).first()
        return row.claimed_by if row is not None and row.progress > 0 else None

    victim_name = until(running_on, "the long job is running")
    victim = next(w for w in workers if w.name == victim_name)
    survivor = next(w for w in workers if w is not victim)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)

    def all_final() -> dict[str, dict] | None:
        bodies = {gid: httpx.get(f"{server.url}/api/v1/generations/{gid}", headers=auth[i], timeout=30).json()
                  for gid, i in jobs.items()}
        return bodies if all(b["status"] in ("succeeded", "failed", "canceled") for b in bodies.values()) else None

    bodies = until(all_final, f"every job ends; survivor log: {survivor.log_tail()}", every=0.5)
    assert {gid: b["status"] for gid, b in bodies.items()} == dict.fromkeys(jobs, "succeeded")
    keys = bucket_keys(fleet["s3"], fleet["bucket"])
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text("SELECT id, attempt, claimed_by FROM generations"))}
        outputs = conn.execute(select(Output.generation_id, Output.blob_key)).all()
    for gid, body in bodies.items():
        expected = 2 if gid == long_job else 1
        assert len(body["outputs"]) == expected  # exactly one set of outputs per job, in the bucket, no strays
        mine = sorted(b for g, b in outputs if g == gid)
        assert sorted(k for k in keys if f"/{gid}/" in k and k.startswith("outputs/")) == mine
        # and one thumbnail per output, nothing more
        assert len([k for k in keys if f"/{gid}/" in k and k.startswith("thumbs/")]) == len(mine)
        assert len([b for g, b in outputs if g == gid]) == expected
        assert rows[gid].claimed_by in {"fleet-a", "fleet-b"}  # run by a worker, never by `imagen serve`
    assert rows[long_job].attempt == 2 and rows[long_job].claimed_by == survivor.name
    png = httpx.get(f"{server.url}{bodies[long_job]['outputs'][0]['url']}", headers=auth[0], timeout=30,
                    follow_redirects=True)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

    reader.join(BOUND)
    assert not reader.is_alive() and events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    moving = [e["progress"] for name, e in events if name == "progress" and e["status"] == "running"]
    assert any(0 < p < 1 for p in moving), events  # live progress, from a worker process
    requeued = [i for i, (name, e) in enumerate(events) if name == "progress" and e["status"] == "queued"]
    assert requeued, events  # the stream saw the job go back to the queue after the kill, then run again
    assert any(0 < e["progress"] < 1 for _, e in events[requeued[-1]:] if e.get("status") == "running")


AMQP_URL = os.environ.get("IMAGEN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def test_tasks_run_through_a_rabbitmq_broker_too(monkeypatch, redis_url, tmp_path):
    """The broker may be RabbitMQ (Redis then only carries progress, cancels and the registry): a task enqueued by
    `CeleryTasks` reaches a worker consuming that queue and runs with the worker's services."""
    from celery.contrib.testing.worker import start_worker

    from imagen.fleet.celery_app import CeleryTasks, set_worker_services
    from imagen.kit.config import Settings
    from imagen.kit.tasks import TASKS, TaskDef

    queue = f"imagen-test-{new_id()}"  # a queue of this test's own: nothing left by another run is consumed
    ran: list[tuple[Any, str]] = []
    done = threading.Event()

    def record(services: Any, value: str) -> None:
        ran.append((services, value))
        done.set()

    monkeypatch.setitem(TASKS, "test.record", TaskDef("test.record", record, queue))
    settings = Settings(data_dir=tmp_path, executor="celery", broker_url=AMQP_URL, redis_url=redis_url)
    tasks = CeleryTasks(settings)
    worker_services = object()
    set_worker_services(worker_services)
    try:
        with start_worker(tasks.app, pool="threads", concurrency=1, queues=[queue], perform_ping_check=False,
                          shutdown_timeout=30):
            tasks.enqueue("test.record", "hello")
            assert done.wait(30), "the task did not arrive through RabbitMQ"
    finally:
        set_worker_services(None)
        tasks.app.connection_for_write().default_channel.queue_delete(queue)
    assert ran == [(worker_services, "hello")]
