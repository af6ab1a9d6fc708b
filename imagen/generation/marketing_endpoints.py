"""Marketing consent per output (owner) and marking outputs for marketing (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from imagen.accounts.http import AdminUser, CurrentUser
from imagen.consent.schemas import MarketingConsentIn, MarketingConsentOut, MarketingStatusOut
from imagen.generation.marketing import marketing_service
from imagen.kit.http import SessionDep, SettingsDep

router = APIRouter(prefix="/api/v1", tags=["marketing"])


@router.get("/outputs/{output_id}/marketing-consent", response_model=MarketingStatusOut)
def get_marketing_consent(output_id: str, user: CurrentUser, session: SessionDep,
                          settings: SettingsDep) -> MarketingStatusOut:
    output = marketing_service.owned_output(session, user=user, output_id=output_id)
    row = marketing_service.current(session, output_id=output.id)
    return MarketingStatusOut(
        output_id=output.id, consented=row is not None, marked_for_marketing=bool(row and row.marked_at),
        consent=MarketingConsentOut.model_validate(row) if row else None,
        text=marketing_service.consent_text(legal_entity=settings.legal_entity))


@router.post("/outputs/{output_id}/marketing-consent", status_code=status.HTTP_201_CREATED,
             response_model=MarketingConsentOut)
def give_marketing_consent(output_id: str, data: MarketingConsentIn, user: CurrentUser, session: SessionDep,
                           response: Response) -> MarketingConsentOut:
    row, created = marketing_service.give(session, user=user, output_id=output_id, text_shown=data.text_shown,
                                          agree=data.agree)
    if not created:
        response.status_code = status.HTTP_200_OK
    return MarketingConsentOut.model_validate(row)


@router.delete("/outputs/{output_id}/marketing-consent", status_code=status.HTTP_204_NO_CONTENT)
def withdraw_marketing_consent(output_id: str, user: CurrentUser, session: SessionDep) -> None:
    marketing_service.withdraw(session, user=user, output_id=output_id)


@router.post("/admin/outputs/{output_id}/marketing", response_model=MarketingConsentOut)
def mark_for_marketing(output_id: str, admin: AdminUser, session: SessionDep) -> MarketingConsentOut:
    return MarketingConsentOut.model_validate(marketing_service.mark(session, admin=admin, output_id=output_id))


@router.delete("/admin/outputs/{output_id}/marketing", status_code=status.HTTP_204_NO_CONTENT)
def unmark_for_marketing(output_id: str, admin: AdminUser, session: SessionDep) -> None:
    marketing_service.unmark(session, output_id=output_id)


@router.get("/admin/marketing-outputs", response_model=list[MarketingConsentOut])
def list_marketing_outputs(admin: AdminUser, session: SessionDep) -> list[MarketingConsentOut]:
    return [MarketingConsentOut.model_validate(r) for r in marketing_service.marked(session)]
