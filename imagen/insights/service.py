"""Deriving insight rows from ended generations, and releasing them only as thresholded, optionally noised aggregates.

`derive` reads one generation row (its parameters, timings and the signals the worker recorded, image statistics
included) and writes one anonymous `InsightRecord`, only when the consent stamped on the generation at submission
allows it. It is handed a session and nothing else: no blob store, so it cannot open an upload or an image.

`report` computes every aggregate the API, the page and the CSV show. A group (a day and workflow, a model family, a
sampler, a size, a failure reason, a topic) is released only when at least `min_group` rows make it up; with
`epsilon` > 0 each released count gets Laplace noise of scale 1/epsilon (a count changes by at most one when one
generation is added or removed, so its sensitivity is 1), rounded and never below zero.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imagen.assets.models import Asset
from imagen.generation.models import FINAL_STATUSES, Generation
from imagen.insights.embedding import embed, kmeans, nearest_phrases
from imagen.insights.models import InsightRecord
from imagen.kit.db import utcnow

TOPIC_SAMPLE = 2000  # the newest rows clustered into topics
MAX_TOPICS = 8
# Failure categories: what the error text of a failed job is reduced to (the text itself may name a user's file).
FAILURE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("timed out", "timeout"), ("could not be completed", "safety_block"), ("stopped reporting", "worker_lost"),
    ("input image", "input_missing"), ("lora", "model_load"), ("checkpoint", "model_load"),
    ("model file", "model_load"), ("database", "database"), ("could not", "storage"),
    ("generation failed", "runtime_error"),
)


def failure_category(status: str, error: str | None) -> str | None:
    if status != "failed":
        return None
    text = (error or "").lower()
    return next((category for needle, category in FAILURE_PATTERNS if needle in text), "other")


def _two_figures(value: Any) -> float | None:
    """Timings to two significant figures: enough for percentiles, too coarse to match a job's exact timing."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return None
    return float(f"{value:.2g}")


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return round(float(value), 2) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class InsightsService:
    def derive(self, session: Session, *, generation_id: str) -> InsightRecord | None:
        """One anonymous row for an ended, consented generation; None (and nothing written) otherwise. Safe to run
        twice: the generation is marked derived in the same transaction."""
        gen = session.get(Generation, generation_id, with_for_update=True)
        if gen is None or gen.insights_derived or gen.status not in FINAL_STATUSES:
            return None
        gen.insights_derived = True
        if not gen.consent_model_improvement:  # the stamp of the submission decides, whatever came later
            return None
        params, signals = gen.params or {}, gen.signals or {}
        checkpoint = next((m for m in gen.models or [] if m.get("role") == "checkpoint"), {})
        stats = signals.get("image_stats") or {}
        prompt = params.get("prompt")
        queue_wait = (gen.started_at - gen.created_at).total_seconds() if gen.started_at else None
        loaded_now = signals.get("checkpoint_loaded_now")
        record = InsightRecord(
            day=(gen.finished_at or utcnow()).date(), status=gen.status,
            failure_reason=failure_category(gen.status, gen.error), workflow=gen.workflow,
            workflow_version=gen.workflow_version, pipeline=gen.pipeline,
            model_family=str(checkpoint.get("family") or signals.get("family") or "unknown")[:16],
            checkpoint_source=self._source(session, checkpoint),
            lora_count=sum(1 for m in gen.models or [] if m.get("role") == "lora"),
            sampler=str(params["scheduler"])[:32] if params.get("scheduler") else None,
            steps=_int(params.get("steps")), guidance=_float(params.get("guidance")),
            width=_int(params.get("width")), height=_int(params.get("height")),
            batch_size=_int(params.get("batch_size")), queue_wait_seconds=_two_figures(queue_wait),
            load_seconds=_two_figures(signals.get("load_seconds")),
            inference_seconds=_two_figures(signals.get("inference_seconds")),
            cache_hit=(not loaded_now) if isinstance(loaded_now, bool) else None,
            sharpness=_float(stats.get("sharpness")), colourfulness=_float(stats.get("colourfulness")),
            nsfw_score=_float(signals.get("nsfw_score")),
            embedding=embed(prompt) if isinstance(prompt, str) and prompt.strip() else None)
        session.add(record)
        return record

    def pending(self, session: Session, *, limit: int = 500) -> list[str]:
        """Ended generations not derived yet (a lost task, a job the watchdog ended): the periodic sweep's work."""
        return list(session.scalars(select(Generation.id).where(
            Generation.status.in_(FINAL_STATUSES), Generation.insights_derived.is_(False)).limit(limit)))

    @staticmethod
    def _source(session: Session, checkpoint: dict[str, Any]) -> str:
        """builtin, public or private: whether the checkpoint is shipped, published, or someone's own (never which)."""
        if not checkpoint.get("blob_key"):
            return "builtin"
        public = session.scalar(select(Asset.public).where(Asset.id == checkpoint.get("id")))
        return "public" if public else "private"

    def report(self, session: Session, *, min_group: int, epsilon: float = 0.0, days: int = 30,
               now: datetime | None = None, rng: random.Random | None = None) -> Report:
        since = ((now or utcnow()) - timedelta(days=days)).date()
        recent = InsightRecord.day >= since
        release = Release(min_group, epsilon, rng or random.SystemRandom())

        def grouped(*columns: Any) -> Counter[Any]:
            """Counts per group, computed by the database (only the groups leave it, not the rows)."""
            query = select(*columns, func.count()).where(recent, *(c.is_not(None) for c in columns))
            found: Counter[Any] = Counter()
            for *key, n in session.execute(query.group_by(*columns)):
                found[key[0] if len(key) == 1 else tuple(key)] += n
            return found

        report = Report(min_group=min_group, epsilon=epsilon, days=days,
                        rows=session.scalar(select(func.count()).select_from(InsightRecord).where(recent)) or 0)
        report.per_day = release.counts(Counter({(day.isoformat(), workflow): n for (day, workflow), n in grouped(
            InsightRecord.day, InsightRecord.workflow).items()}))
        report.samplers = release.counts(grouped(InsightRecord.sampler))
        report.sizes = release.counts(Counter({f"{w}x{h}": n for (w, h), n in grouped(
            InsightRecord.width, InsightRecord.height).items()}))
        report.failures = release.counts(grouped(InsightRecord.failure_reason))
        report.timings = release.percentiles(session.execute(select(
            InsightRecord.model_family, InsightRecord.queue_wait_seconds, InsightRecord.inference_seconds,
        ).where(recent)).all())
        report.busy = self._busy(session, since=since, release=release)
        report.topics = self._topics(session, since=since, release=release)
        return report

    @staticmethod
    def _busy(session: Session, *, since: date, release: Release) -> list[tuple[str, float]]:
        """Per day: the time workers spent inside jobs over the day's length (one worker all day busy = 1.0), from
        every generation's start and end (no one's identity is read; days with fewer than min_group jobs are left
        out)."""
        start = datetime.combine(since, time.min, tzinfo=UTC)
        spent: dict[str, float] = defaultdict(float)
        jobs: Counter[str] = Counter()
        for started, finished in session.execute(select(Generation.started_at, Generation.finished_at).where(
                Generation.finished_at >= start, Generation.started_at.is_not(None))):
            day = finished.date().isoformat()
            spent[day] += max(0.0, (finished - started).total_seconds())
            jobs[day] += 1
        return [(day, round(spent[day] / 86400, 4)) for day in sorted(spent) if jobs[day] >= release.min_group]

    @staticmethod
    def _topics(session: Session, *, since: date, release: Release) -> list[tuple[str, int]]:
        vectors = [v for v in session.scalars(
            select(InsightRecord.embedding).where(InsightRecord.day >= since, InsightRecord.embedding.is_not(None))
            .order_by(InsightRecord.day.desc()).limit(TOPIC_SAMPLE)) if v]
        if len(vectors) < release.min_group:
            return []
        points = np.array(vectors, dtype=float)
        centres, labels = kmeans(points, min(MAX_TOPICS, len(vectors) // release.min_group))
        sizes = Counter(int(label) for label in labels)
        topics = Counter({" / ".join(nearest_phrases(centres[j])): n for j, n in sizes.items()})
        return release.counts(topics)


@dataclass
class Release:
    """The one gate every released number passes: the group threshold, then the optional Laplace noise."""

    min_group: int
    epsilon: float
    rng: random.Random

    def noisy(self, count: int) -> int:
        if self.epsilon <= 0:
            return count
        # Laplace(0, 1/epsilon) as the difference of two exponentials of rate epsilon.
        noise = self.rng.expovariate(self.epsilon) - self.rng.expovariate(self.epsilon)
        return max(0, round(count + noise))

    def counts(self, counter: Counter[Any]) -> list[tuple[Any, int]]:
        kept = [(key, self.noisy(n)) for key, n in counter.items() if n >= self.min_group]
        return sorted(kept, key=lambda item: (-item[1], str(item[0])))

    def percentiles(self, rows: list[Any]) -> list[dict[str, Any]]:
        groups: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            groups[r.model_family].append(r)
        out = []
        for family, members in sorted(groups.items()):
            if len(members) < self.min_group:
                continue
            entry: dict[str, Any] = {"family": family, "count": self.noisy(len(members))}
            for name, column in (("queue_wait", "queue_wait_seconds"), ("inference", "inference_seconds")):
                values = [getattr(r, column) for r in members if getattr(r, column) is not None]
                enough = len(values) >= self.min_group
                entry[f"{name}_p50"] = round(float(np.percentile(values, 50)), 3) if enough else None
                entry[f"{name}_p95"] = round(float(np.percentile(values, 95)), 3) if enough else None
            out.append(entry)
        return out


@dataclass
class Report:
    min_group: int
    epsilon: float
    days: int
    rows: int
    per_day: list[tuple[Any, int]] = field(default_factory=list)  # ((day, workflow), count)
    samplers: list[tuple[Any, int]] = field(default_factory=list)
    sizes: list[tuple[Any, int]] = field(default_factory=list)
    failures: list[tuple[Any, int]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)
    busy: list[tuple[str, float]] = field(default_factory=list)
    topics: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_group": self.min_group, "epsilon": self.epsilon or None, "days": self.days,
            "per_day": [{"day": d, "workflow": w, "count": n} for (d, w), n in self.per_day],
            "timings": self.timings,
            "samplers": [{"sampler": s, "count": n} for s, n in self.samplers],
            "sizes": [{"size": s, "count": n} for s, n in self.sizes],
            "failures": [{"reason": s, "count": n} for s, n in self.failures],
            "busy": [{"day": d, "fraction": f} for d, f in self.busy],
            "topics": [{"topic": t, "count": n} for t, n in self.topics],
        }

    def csv(self) -> str:
        """One line per released number: chart, group, measure, value."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["chart", "group", "measure", "value"])
        for (day, workflow), n in self.per_day:
            writer.writerow(["generations_per_day", f"{day} {workflow}", "count", n])
        for t in self.timings:
            for key, value in t.items():
                if key != "family" and value is not None:
                    writer.writerow(["timings", t["family"], key, value])
        for chart, items in (("samplers", self.samplers), ("sizes", self.sizes), ("failures", self.failures),
                             ("topics", self.topics)):
            for group, n in items:
                writer.writerow([chart, group, "count", n])
        for day, fraction in self.busy:
            writer.writerow(["busy_fraction", day, "fraction", fraction])
        return out.getvalue()


insights_service = InsightsService()
