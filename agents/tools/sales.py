"""Sales tools: product search, side-by-side comparison and price quotes from the price book.

Data (bundled example: agents/company/sales): `products.csv` (list prices per region) and `pricing.toml`
(regions with currency and tax, volume discount tiers per category). The folder is the department's
`data_dir`, or AGENTDESK_SALES_DATA_DIR when set.

Quotes are computed here with Decimal arithmetic, not by the model, so the numbers a customer sees are the
price book's. create_quote() makes a numbered quote (a CSV file sent to the thread) and records it in the
quotes ledger `quotes.csv` (written atomically, see agents.tools.records).
"""
from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import re
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from smolagents import tool

from agents.departments import resolve_data_dir
from agents.tools import current_caller, current_output_dir
from agents.tools.records import atomic_write, current_file, locked, writable_file

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


FIND_LIMIT = 5  # the best matches only: a long catalogue dump buries the answer for a small model


@tool
def find_products(query: str) -> list[dict]:
    """Finds Northwind Labs products (sensors, gateways, accessories, software, services) matching a need,
    with SKU, features, unit and list prices per region (US, EU, UK, APAC).

    Args:
        query: Words describing what the customer needs, e.g. "CO2 sensor with display" (the 5 best matches),
            a SKU such as "NW-AQ100" (that product), or "all" (the whole catalogue).
    """
    products = _products()
    regions = _pricing()["regions"]
    terms = set(re.findall(r"[a-z0-9.]+", query.lower())) - {"a", "an", "the", "with", "for", "and", "of"}
    if not terms or terms == {"all"}:
        return [_public(row, regions) for row in products.values()]
    skus = [products[w.upper()] for w in re.findall(r"[a-z0-9-]+", query.lower()) if w.upper() in products]
    if skus:
        return [_public(row, regions) for row in skus]
    scored = []
    for position, row in enumerate(products.values()):
        haystack = " ".join(row[k] for k in ("sku", "name", "category", "description", "features")).lower()
        words = set(re.findall(r"[a-z0-9.]+", haystack))
        score = sum(2 if t in words else 1 for t in terms if t in words or t in haystack)
        if score:
            scored.append((-score, position, row))
    return [_public(row, regions) for _, _, row in sorted(scored, key=lambda s: s[:2])[:FIND_LIMIT]]


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
    """Quotes a price for a quantity of one product in a region, from the price book: list price in the
    region's currency, volume discount, tax and total. Use it for every "quote N of X", price, cost or discount
    question; never compute discounts yourself. Returns a dict with keys sku, name, region, currency, quantity,
    unit_price, subtotal, discount_rate, discount, net, tax_name, tax, total, valid_days.

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


LEDGER_FILE = "quotes.csv"
LEDGER_COLUMNS = ("quote_number", "created_at", "customer", "region", "currency", "lines", "net", "tax", "total",
                  "valid_until", "file", "created_by")
MAX_LINES = 50


def _customer(name: str) -> str:
    name = re.sub(r"\s+", " ", str(name or "")).strip()
    if not name:
        raise ValueError("customer must be the customer's name")
    if len(name) > 120:
        raise ValueError("customer is longer than 120 characters")
    return name


@tool
def create_quote(customer: str, items: list[dict], region: str) -> dict:
    """Creates a numbered quote document for a named customer, after the person approves it in the chat:
    writes it as a CSV file that is sent to the thread and records it in the quotes ledger. Returns the quote
    number, the file name and the totals. Only when the person asks for a quote document for a customer;
    for a price, use price_quote.

    Args:
        customer: The customer's company name, e.g. "Contoso Ltd".
        items: Order lines, each {"sku": "NW-AQ100", "quantity": 20}.
        region: Sales region: "US", "EU", "UK" or "APAC".
    """
    customer = _customer(customer)
    if not isinstance(items, list) or not items:
        raise ValueError('items must be a non-empty list like [{"sku": "NW-AQ100", "quantity": 20}]')
    if len(items) > MAX_LINES:
        raise ValueError(f"a quote has at most {MAX_LINES} lines")
    lines = []
    for item in items:
        if not isinstance(item, dict) or "sku" not in item or "quantity" not in item:
            raise ValueError(f'each item needs "sku" and "quantity", got {item!r}')
        lines.append(price_quote.forward(str(item["sku"]), item["quantity"], region))
    currency, code = lines[0]["currency"], lines[0]["region"]
    net = sum(Decimal(str(line["net"])) for line in lines)
    tax = sum(Decimal(str(line["tax"])) for line in lines)
    total = net + tax
    today = dt.date.today()
    valid_until = today + dt.timedelta(days=int(lines[0]["valid_days"]))
    ledger = writable_file(_data_dir() / LEDGER_FILE)
    with locked(ledger):
        rows = []
        try:
            with current_file(_data_dir() / LEDGER_FILE).open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            pass
        year_prefix = f"Q-{today.year}-"
        numbers = [int(r["quote_number"][len(year_prefix):]) for r in rows
                   if r["quote_number"].startswith(year_prefix) and r["quote_number"][len(year_prefix):].isdigit()]
        number = f"{year_prefix}{max(numbers, default=0) + 1:04d}"
        file_name = f"quote-{number}.csv"
        quote = io.StringIO()
        writer = csv.writer(quote, lineterminator="\n")
        writer.writerow(["Northwind Labs quote", number])
        writer.writerow(["Customer", customer])
        writer.writerow(["Region", code, "Currency", currency])
        writer.writerow(["Date", today.isoformat(), "Valid until", valid_until.isoformat()])
        writer.writerow([])
        writer.writerow(["SKU", "Product", "Quantity", "Unit", "Unit price", "Discount rate", "Discount", "Net",
                         "Tax", "Total"])
        for line in lines:
            writer.writerow([line["sku"], line["name"], line["quantity"], line["unit"], f"{line['unit_price']:.2f}",
                             f"{line['discount_rate']:.2f}", f"{line['discount']:.2f}", f"{line['net']:.2f}",
                             f"{line['tax']:.2f}", f"{line['total']:.2f}"])
        writer.writerow([])
        writer.writerow(["Net", f"{_money(net):.2f}"])
        writer.writerow([lines[0]["tax_name"], f"{_money(tax):.2f}"])
        writer.writerow(["Total", f"{_money(total):.2f}", currency])
        folder = current_output_dir() or ledger.parent / "quotes"
        atomic_write(folder / file_name, quote.getvalue())
        try:
            created_by = current_caller().hashed_user
        except Exception:  # noqa: BLE001 - outside a chat request (a script) there is no caller
            created_by = ""
        rows.append({"quote_number": number, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "customer": customer, "region": code, "currency": currency,
                     "lines": str(len(lines)), "net": f"{_money(net):.2f}", "tax": f"{_money(tax):.2f}",
                     "total": f"{_money(total):.2f}", "valid_until": valid_until.isoformat(), "file": file_name,
                     "created_by": created_by})
        out = io.StringIO()
        ledger_writer = csv.DictWriter(out, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
        ledger_writer.writeheader()
        ledger_writer.writerows(rows)
        atomic_write(ledger, out.getvalue())
    return {"quote_number": number, "file": file_name, "customer": customer, "region": code, "currency": currency,
            "lines": [{k: line[k] for k in ("sku", "name", "quantity", "net", "tax", "total")} for line in lines],
            "net": _money(net), "tax": _money(tax), "total": _money(total), "valid_until": valid_until.isoformat(),
            "note": f"The quote file {file_name} is attached to this conversation."}
