"""Sales tools: product search, side-by-side comparison and price quotes from the price book.

Data (bundled example: agents/company/sales): `products.csv` (list prices per region) and `pricing.toml`
(regions with currency and tax, volume discount tiers per category). The folder is the department's
`data_dir`, or AGENTDESK_SALES_DATA_DIR when set.

Quotes are computed here with Decimal arithmetic, not by the model, so the numbers a customer sees are the
price book's.
"""
from __future__ import annotations

import csv
import difflib
import re
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from smolagents import tool

from agents.departments import resolve_data_dir

ENV_VAR = "AGENTDESK_SALES_DATA_DIR"
_CENT = Decimal("0.01")


def _data_dir() -> Path:
    return resolve_data_dir("sales", ENV_VAR)


def _products() -> dict[str, dict[str, str]]:
    with (_data_dir() / "products.csv").open(newline="", encoding="utf-8") as handle:
        return {row["sku"].strip().upper(): row for row in csv.DictReader(handle)}


def _pricing() -> dict[str, Any]:
    with (_data_dir() / "pricing.toml").open("rb") as handle:
        return tomllib.load(handle)


def _money(value: Decimal) -> float:
    return float(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _public(row: dict[str, str], regions: dict[str, Any]) -> dict[str, Any]:
    """A product as the agent sees it: features as a list and list prices with their currency."""
    return {
        "sku": row["sku"],
        "name": row["name"],
        "category": row["category"],
        "description": row["description"],
        "features": [f.strip() for f in row["features"].split(";") if f.strip()],
        "unit": row["unit"],
        "list_prices": {
            region: {"price": float(row[rule["price_column"]]), "currency": rule["currency"]}
            for region, rule in regions.items()
        },
    }


def _product(sku: str, products: dict[str, dict[str, str]]) -> dict[str, str]:
    key = str(sku).strip().upper()
    if key in products:
        return products[key]
    close = difflib.get_close_matches(key, list(products), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown SKU {sku!r}.{hint} Use find_products to look SKUs up.")


def _region(region: str, regions: dict[str, Any]) -> str:
    wanted = str(region).strip().lower()
    for code, rule in regions.items():
        if wanted == code.lower() or wanted in (a.lower() for a in rule.get("aliases", [])):
            return code
    raise ValueError(f"Unknown region {region!r}. Quotes are available for: {', '.join(regions)}.")


@tool
def find_products(query: str) -> list[dict]:
    """Finds Northwind Labs products (sensors, gateways, accessories, software, services) matching a need,
    with SKU, features, unit and list prices per region (US, EU, UK, APAC).

    Args:
        query: Words describing what the customer needs, e.g. "CO2 sensor with display"; "all" lists everything.
    """
    products = _products()
    regions = _pricing()["regions"]
    terms = set(re.findall(r"[a-z0-9.]+", query.lower())) - {"a", "an", "the", "with", "for", "and", "of"}
    if not terms or terms == {"all"}:
        return [_public(row, regions) for row in products.values()]
    scored = []
    for position, row in enumerate(products.values()):
        haystack = " ".join(row[k] for k in ("sku", "name", "category", "description", "features")).lower()
        words = set(re.findall(r"[a-z0-9.]+", haystack))
        score = sum(2 if t in words else 1 for t in terms if t in words or t in haystack)
        if score:
            scored.append((-score, position, row))
    return [_public(row, regions) for _, _, row in sorted(scored, key=lambda s: s[:2])]


@tool
def compare_products(skus: list[str]) -> dict:
    """Compares products side by side: each product's details and prices, the features they share and the
    features only some of them have.

    Args:
        skus: Two or more SKUs, e.g. ["NW-AQ100", "NW-AQ200"].
    """
    if not isinstance(skus, list) or len(skus) < 2:
        raise ValueError("compare_products needs a list of at least two SKUs")
    products = _products()
    regions = _pricing()["regions"]
    chosen = [_public(_product(sku, products), regions) for sku in dict.fromkeys(skus)]
    feature_sets = {p["sku"]: set(p["features"]) for p in chosen}
    shared = set.intersection(*feature_sets.values())
    return {
        "products": chosen,
        "shared_features": sorted(shared),
        "only_in": {sku: sorted(features - shared) for sku, features in feature_sets.items()},
    }


@tool
def price_quote(sku: str, quantity: int, region: str) -> dict:
    """Prices an order line from the price book: list price in the region's currency, volume discount,
    tax and total. Always use this for prices; never compute discounts yourself.

    Args:
        sku: Product SKU, e.g. "NW-AQ100".
        quantity: Number of units (devices, device-years or site-years depending on the product).
        region: Sales region: "US", "EU", "UK" or "APAC" (common names like "Europe" also work).
    """
    if isinstance(quantity, float) and quantity.is_integer():
        quantity = int(quantity)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise ValueError(f"quantity must be a positive whole number, got {quantity!r}")
    pricing = _pricing()
    regions = pricing["regions"]
    product = _product(sku, _products())
    code = _region(region, regions)
    rule = regions[code]

    unit_price = Decimal(product[rule["price_column"]])
    subtotal = unit_price * quantity
    tiers = pricing.get("discounts", {}).get(product["category"], [])
    reached = [t for t in tiers if quantity >= t["min_quantity"]]
    tier = max(reached, key=lambda t: t["min_quantity"]) if reached else None
    rate = Decimal(str(tier["rate"])) if tier else Decimal(0)
    discount = (subtotal * rate).quantize(_CENT, rounding=ROUND_HALF_UP)
    net = subtotal - discount
    tax_rate = Decimal(str(rule["tax_rate"]))
    tax = (net * tax_rate).quantize(_CENT, rounding=ROUND_HALF_UP)
    next_tiers = [t for t in tiers if t["min_quantity"] > quantity]
    notes = [rule.get("tax_note", ""), pricing.get("approval_note", "")]
    if next_tiers:
        upcoming = min(next_tiers, key=lambda t: t["min_quantity"])
        notes.append(f"Ordering {upcoming['min_quantity']} or more gets a {float(upcoming['rate']):.0%} discount.")
    return {
        "sku": product["sku"],
        "name": product["name"],
        "region": code,
        "currency": rule["currency"],
        "quantity": quantity,
        "unit": product["unit"],
        "unit_price": _money(unit_price),
        "subtotal": _money(subtotal),
        "discount_rate": float(rate),
        "discount": _money(discount),
        "net": _money(net),
        "tax_name": rule["tax_name"],
        "tax_rate": float(tax_rate),
        "tax": _money(tax),
        "total": _money(net + tax),
        "valid_days": pricing.get("quote_valid_days", 30),
        "notes": [n for n in notes if n],
    }
