"""The released aggregates for admins: JSON and CSV (the same numbers as /admin/insights)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from imagen.accounts.http import AdminUser
from imagen.insights.service import insights_service
from imagen.kit.http import SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1", tags=["insights"])
Days = Query(default=30, ge=1, le=366, description="how many days back")


@router.get("/admin/insights")
def get_insights(admin: AdminUser, session: SessionDep, settings: SettingsDep, days: int = Days) -> dict[str, Any]:
    """Aggregates over groups of at least IMAGEN_INSIGHTS_MIN_GROUP generations (smaller groups are left out)."""
    return insights_service.report(session, min_group=settings.insights_min_group, epsilon=settings.insights_epsilon,
                                   days=days).as_dict()


@router.get("/admin/insights.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "chart, group, measure, value"}})
def export_insights(admin: AdminUser, session: SessionDep, settings: SettingsDep, days: int = Days) -> Response:
    report = insights_service.report(session, min_group=settings.insights_min_group,
                                     epsilon=settings.insights_epsilon, days=days)
    return Response(report.csv(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="imagen-insights.csv"'})
