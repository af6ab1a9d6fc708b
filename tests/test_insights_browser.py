"""/admin/insights in a real headless Chromium (SQLite only): every chart renders as SVG with its bars under the
strict CSP, with no console errors, and a screenshot is kept under $IMAGEN_TEST_ARTIFACTS (default:
test-artifacts/ in the checkout)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from imagen.accounts.service import account_service
from imagen.generation.models import Generation
from imagen.insights.embedding import embed
from imagen.kit.db import new_id, utcnow
from tests.conftest import signup_payload
from tests.test_browser import CHROMIUM, chromium, live, playwright_sync  # noqa: F401 (fixtures)
from tests.test_insights_release import rows

expect = playwright_sync.expect
ARTIFACTS = Path(os.environ.get("IMAGEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
CHARTS = ("chart-per-day", "chart-queue-wait", "chart-inference", "chart-samplers", "chart-sizes", "chart-failures",
          "chart-busy", "chart-topics")
pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def seed(app, user_id: str) -> None:
    """Enough anonymous rows that every chart has a released group, and a day of finished jobs for the busy one."""
    today, yesterday = utcnow().date(), utcnow().date() - timedelta(days=1)
    now = utcnow()
    with app.state.services.db.transaction() as s:
        for day in (today, yesterday):
            s.add_all(rows(20, day=day, embedding=embed("a fluffy cat on a sofa")))
            s.add_all(rows(20, day=day, workflow="img2img", sampler="dpmpp_2m", width=768, height=768,
                           model_family="sdxl", embedding=embed("snowy mountains over a lake")))
        s.add_all(rows(20, status="failed", failure_reason="timeout"))
        s.add_all(rows(20, status="failed", failure_reason="model_load", workflow="img2img"))
        for n in range(20):
            s.add(Generation(id=new_id(), user_id=user_id, workflow="txt2img", workflow_version=2, pipeline="txt2img",
                             params={"prompt": "x"}, checkpoint="imagen-tiny", checkpoint_sha256="0" * 64, models=[],
                             consent_model_improvement=False, status="succeeded", insights_derived=True,
                             created_at=now - timedelta(minutes=60 + n), started_at=now - timedelta(minutes=50 + n),
                             finished_at=now - timedelta(minutes=5 + n)))


def test_every_chart_renders_without_console_errors(live, chromium) -> None:  # noqa: F811
    app, base = live
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The service has no favicon: Chromium's own request for one is the only 404 it may report.
    page.on("console", lambda msg: errors.append(f"{msg.text} {msg.location}") if msg.type == "error"
            and not msg.location.get("url", "").endswith("/favicon.ico") else None)
    context.on("response", lambda resp: errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    try:
        r = page.request.post("/api/v1/auth/signup", data=signup_payload("root@example.com"))
        assert r.status == 201, r.text()
        with app.state.services.db.transaction() as s:
            admin = account_service.get_by_email(s, "root@example.com")
            admin.role = "admin"
            admin_id = admin.id
        seed(app, admin_id)
        page.goto("/admin")
        page.click('a[href="/admin/insights"]')
        expect(page.locator("h1")).to_have_text("Insights")
        for chart_id in CHARTS:
            chart = page.locator(f"svg#{chart_id}")
            expect(chart).to_be_visible()
            assert chart.locator("rect.bar").count() >= 1, chart_id
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 50, chart_id
        expect(page.locator("#chart-per-day rect.bar")).to_have_count(4)  # two days x two workflows, stacked
        expect(page.locator("#chart-queue-wait rect.bar")).to_have_count(4)  # two families x p50, p95
        expect(page.locator("#chart-busy rect.bar")).to_have_count(1)
        assert "cat" in page.locator("#chart-topics").inner_html()
        page.screenshot(path=str(ARTIFACTS / "admin-insights-1280.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: the charts shrink, nothing scrolls sideways
        page.reload()
        expect(page.locator("svg#chart-topics")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("svg#chart-per-day").bounding_box()["width"] <= 390
        page.screenshot(path=str(ARTIFACTS / "admin-insights-390.png"), full_page=True)
        csv = page.request.get(page.get_attribute("#insights-csv", "href"))
        assert csv.ok and csv.text().startswith("chart,group,measure,value")
        assert errors == []
    finally:
        context.close()
