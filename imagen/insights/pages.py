"""/admin/insights: the operator's charts, every one drawn from the released (thresholded, noised) aggregates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from imagen.accounts.http import OptionalPrincipalDep
from imagen.insights.charts import bar_chart, hbar_chart
from imagen.insights.service import Report, insights_service
from imagen.kit.http import SessionDep, SettingsDep
from imagen.web.pages import not_found_page, render, to_login

router = APIRouter(include_in_schema=False)


def charts(report: Report) -> list[tuple[str, str, Markup]]:
    """(id, title, svg) for every chart on the page, in order."""
    days = sorted({day for (day, _), _ in report.per_day})
    workflows = sorted({workflow for (_, workflow), _ in report.per_day})
    by_day = {key: n for key, n in report.per_day}
    per_day = [(day, [float(by_day.get((day, w), 0)) for w in workflows]) for day in days]

    def timing(name: str) -> list[tuple[str, list[float]]]:
        return [(t["family"], [float(t[f"{name}_p50"]), float(t[f"{name}_p95"])]) for t in report.timings
                if t[f"{name}_p50"] is not None]

    def simple(items: list[tuple[Any, int]]) -> list[tuple[str, float]]:
        return [(str(label), float(n)) for label, n in items]

    return [
        ("chart-per-day", "Generations per day by workflow",
         bar_chart("chart-per-day", "Generations per day by workflow", per_day, workflows, stacked=True)),
        ("chart-queue-wait", "Queue wait per model family (p50, p95)",
         bar_chart("chart-queue-wait", "Queue wait per model family", timing("queue_wait"), ["p50", "p95"], " s")),
        ("chart-inference", "Inference time per model family (p50, p95)",
         bar_chart("chart-inference", "Inference time per model family", timing("inference"), ["p50", "p95"],
                   " s")),
        ("chart-samplers", "Sampler popularity",
         hbar_chart("chart-samplers", "Sampler popularity", simple(report.samplers))),
        ("chart-sizes", "Size popularity",
         hbar_chart("chart-sizes", "Size popularity", simple(report.sizes))),
        ("chart-failures", "Failure reasons",
         hbar_chart("chart-failures", "Failure reasons", simple(report.failures))),
        ("chart-busy", "Worker busy fraction per day",
         bar_chart("chart-busy", "Worker busy fraction per day",
                   [(day, [fraction]) for day, fraction in report.busy], ["busy"])),
        ("chart-topics", "Prompt topics (nearest built-in example phrases)",
         hbar_chart("chart-topics", "Prompt topics", simple(report.topics))),
    ]


@router.get("/admin/insights")
def admin_insights_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                        settings: SettingsDep, days: int = 30) -> Response:
    if principal is None:
        return to_login()
    if principal.user.role != "admin":
        return not_found_page()
    report = insights_service.report(session, min_group=settings.insights_min_group,
                                     epsilon=settings.insights_epsilon, days=max(1, min(days, 366)))
    return render(request, "admin_insights.html", principal, report=report, charts=charts(report))
