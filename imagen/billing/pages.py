"""The /billing page: balance, packs to buy, history and receipts. It only reads; billing.js starts a checkout
through the JSON API and sends the browser to Stripe."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from imagen.accounts.http import OptionalPrincipalDep
from imagen.billing.ledger import ledger
from imagen.billing.service import billing_records
from imagen.kit.http import ServicesDep, SessionDep
from imagen.web.pages import render, to_login

router = APIRouter(include_in_schema=False)


@router.get("/billing")
def billing_page(request: Request, principal: OptionalPrincipalDep, session: SessionDep,
                 services: ServicesDep) -> Response:
    if principal is None:
        return to_login()
    billing = services.billing
    user_id = principal.user.id
    return render(request, "billing.html", principal, billing_on=billing.enabled,
                  packs=list(billing.packs.values()) if billing.enabled else [],
                  balance=ledger.balance(session, user_id=user_id),
                  history=ledger.history(session, user_id=user_id, limit=50),
                  receipts=billing_records.receipts(session, user_id=user_id, limit=50),
                  checkout=request.query_params.get("checkout", ""))
