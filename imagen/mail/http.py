"""The request dependency that hands endpoints the app's outbox (built once per app from its settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagen.mail.backends import make_mailer
from imagen.mail.outbox import Outbox


def get_outbox(request: Request) -> Outbox:
    state = request.app.state
    outbox = getattr(state, "outbox", None)
    if outbox is None or outbox.db is not state.db:
        outbox = state.outbox = Outbox(state.db, make_mailer(state.settings), domain=state.settings.site_domain)
    return outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
