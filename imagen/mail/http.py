"""The request dependency that hands endpoints the app's outbox (built once, by the composition root)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imagen.mail.outbox import Outbox


async def get_outbox(request: Request) -> Outbox:
    return request.app.state.services.outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
