"""Prices of generations and the credit packs on sale, read from settings (docs/configuration.md, "Billing").

IMAGEN_BILLING_PRICES (JSON): per workflow name, or "*" for any other, `base` credits per image plus `per_step`
credits per denoising step of a 512x512 image (larger images count by their area, smaller as 512x512):

    credits = batch_size x ceil(base + per_step x steps x max(1, width x height / 512²))

IMAGEN_BILLING_PACKS (JSON): a list of {"id", "credits", "amount" (smallest currency unit), "currency", "name"}.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

REFERENCE_PIXELS = 512 * 512
DEFAULT_PRICES = {"*": {"base": 1, "per_step": 0}}
DEFAULT_PACKS = [
    {"id": "credits-100", "credits": 100, "amount": 500, "currency": "usd", "name": "100 credits"},
    {"id": "credits-1000", "credits": 1000, "amount": 4000, "currency": "usd", "name": "1,000 credits"},
]


@dataclass(frozen=True)
class Price:
    base: float = 1.0
    per_step: float = 0.0


@dataclass(frozen=True)
class Pack:
    id: str
    credits: int
    amount: int
    currency: str
    name: str


def parse_prices(text: str) -> dict[str, Price]:
    """The prices setting, or a ValueError saying what is wrong with it."""
    raw = _json(text, "IMAGEN_BILLING_PRICES") if text.strip() else DEFAULT_PRICES
    if not isinstance(raw, dict) or not raw:
        raise ValueError('IMAGEN_BILLING_PRICES must be a JSON object such as {"*": {"base": 1, "per_step": 0}}')
    prices: dict[str, Price] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or set(spec) - {"base", "per_step"}:
            raise ValueError(f"IMAGEN_BILLING_PRICES[{name!r}] must be an object with base and per_step")
        values = {k: spec[k] for k in ("base", "per_step") if k in spec}
        if any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in values.values()):
            raise ValueError(f"IMAGEN_BILLING_PRICES[{name!r}]: base and per_step are numbers of at least 0")
        prices[str(name)] = Price(**values)
    prices.setdefault("*", Price())
    return prices


def parse_packs(text: str) -> dict[str, Pack]:
    raw = _json(text, "IMAGEN_BILLING_PACKS") if text.strip() else DEFAULT_PACKS
    if not isinstance(raw, list) or not raw:
        raise ValueError("IMAGEN_BILLING_PACKS must be a non-empty JSON list of packs")
    packs: dict[str, Pack] = {}
    for spec in raw:
        if not isinstance(spec, dict):
            raise ValueError("IMAGEN_BILLING_PACKS: each pack is an object")
        pack_id, credits, amount = spec.get("id"), spec.get("credits"), spec.get("amount")
        currency = str(spec.get("currency", "usd")).lower()
        if not isinstance(pack_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", pack_id) or pack_id in packs:
            raise ValueError(f"IMAGEN_BILLING_PACKS: pack id {pack_id!r} must be unique, 1-64 of A-Z a-z 0-9 _ . -")
        for label, value in (("credits", credits), ("amount", amount)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"IMAGEN_BILLING_PACKS[{pack_id!r}]: {label} must be a whole number of at least 1")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise ValueError(f"IMAGEN_BILLING_PACKS[{pack_id!r}]: currency must be a 3-letter ISO code")
        packs[pack_id] = Pack(pack_id, credits, amount, currency, str(spec.get("name") or f"{credits} credits"))
    return packs


def _json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None


def price_of(prices: dict[str, Price], workflow: str, params: dict[str, Any]) -> int:
    """Credits a job costs (validated params: width, height, steps, batch_size)."""
    price = prices.get(workflow) or prices["*"]
    width, height = int(params.get("width", 512)), int(params.get("height", 512))
    steps, batch = int(params.get("steps", 20)), int(params.get("batch_size", 1))
    area = max(1.0, width * height / REFERENCE_PIXELS)
    # Rounded first, so float noise (0.1 x 30 = 3.0000000000000004) never costs a credit more.
    return batch * math.ceil(round(price.base + price.per_step * steps * area, 6))
