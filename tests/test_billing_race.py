"""Holds under concurrency, against the real server on 127.0.0.1 (uvicorn in a thread), SQLite and PostgreSQL:
20 simultaneous submits against a balance that pays for 5 jobs start exactly 5; the rest get 402 and store
nothing, and the books balance."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from imagen.billing.models import BillingAccount, Hold, LedgerEntry
from imagen.generation.models import Generation
from tests.conftest import TINY
from tests.test_billing import assert_books_balance, billing_on, grant, stripe_api  # noqa: F401 (fixture)
from tests.test_quota_race import at_once, live, login  # noqa: F401 (fixture)

CLIENTS = 20


def test_twenty_simultaneous_submits_against_five_jobs_of_credit_start_exactly_five(settings, request):
    billing_on(settings, request.getfixturevalue("stripe_api").url, '{"*": {"base": 3, "per_step": 0}}')
    settings.max_queued_per_user = 50  # the balance decides, not the job limit
    app, base = request.getfixturevalue("live")
    app.state.services.executor.stop()  # the jobs stay queued: only the balance decides
    auth = login(base)
    user_id = grant(app, "ada@example.com", 5 * 3 + 2)  # five jobs and a bit, never six

    def submit(i: int, client: httpx.Client) -> httpx.Response:
        return client.post(f"{base}/api/v1/generations", headers=auth,
                           json={"workflow": "txt2img", "params": {"prompt": "a fox", **TINY, "seed": i}})

    answers = at_once(CLIENTS, submit)
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * 5 + [402] * (CLIENTS - 5), [(r.status_code, r.text) for r in answers]
    assert all("costs 3 credits" in r.json()["detail"] for r in answers if r.status_code == 402)
    with app.state.services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 5
        assert s.scalar(select(func.count()).select_from(Hold).where(Hold.status == "held")) == 5
        account = s.get(BillingAccount, user_id)
        assert (account.credits, account.held) == (2, 15)
        assert s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "hold")) == 10
    assert_books_balance(app)
