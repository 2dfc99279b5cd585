"""HR tools: policy search, the asker's own leave balance, and benefits.

Data (bundled example: agents/company/hr): `policies/*.md`, `leave.csv`, `benefits.csv`. The folder is the
department's `data_dir`, or AGENTDESK_HR_DATA_DIR when set.

leave_balance() takes no arguments on purpose: whose balance it returns is decided by the caller the chat
platform authenticated (agents.tools.current_caller()), so a prompt cannot ask for someone else's.
book_leave() books for that same person only; its bookings are kept in `leave_bookings.csv` (written
atomically, see agents.tools.records) and count in leave_balance() from then on.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from smolagents import tool

from agents.chat import Caller, Source
from agents.departments import resolve_data_dir
from agents.tools import current_caller, report_sources
from agents.tools.records import atomic_write, current_file, locked, writable_file

ENV_VAR = "AGENTDESK_HR_DATA_DIR"
HR_CONTACT = "people@northwindlabs.com"
#: Chat platform -> column of leave.csv holding that platform's user id.
_ID_COLUMNS = {"slack": "slack_user", "teams": "teams_user", "terminal": "terminal_user"}

_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i if in is it its long many me much my of on or our "
    "should so than that the their then there this to was we what when where which who why will with you "
    "your".split()
)


def _data_dir() -> Path:
    return resolve_data_dir("hr", ENV_VAR)


def _number(value: str) -> int | float:
    number = float(value or 0)
    return int(number) if number.is_integer() else number


# -- policy search ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    policy: str
    file: str
    heading: str
    text: str


def _stem(word: str) -> str:
    """Crude plural/suffix folding so "policies" meets "policy" and "expenses" meets "expense"."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("es", "e"), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + replacement
    return word


def _tokens(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOPWORDS]


def _sections(folder: Path) -> list[_Section]:
    sections = []
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        title_match = re.search(r"^# (.+)$", text, re.MULTILINE)
        title = title_match.group(1).strip() if title_match else path.stem.replace("-", " ").title()
        parts = re.split(r"^## ", text, flags=re.MULTILINE)
        intro = re.sub(r"^# .+$", "", parts[0], count=1, flags=re.MULTILINE).strip()
        if intro:
            sections.append(_Section(title, path.name, "Overview", intro))
        for part in parts[1:]:
            heading, _, body = part.partition("\n")
            sections.append(_Section(title, path.name, heading.strip(), body.strip()))
    return sections


def _bm25(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    n = len(docs)
    avg = sum(len(d) for d in docs) / n
    df = Counter(t for d in docs for t in set(d))
    scores = []
    for doc in docs:
        tf = Counter(doc)
        score = 0.0
        for term in set(query):
            if term not in tf:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(doc) / avg))
        scores.append(score)
    return scores


def _excerpt(text: str, terms: set[str], limit: int = 700) -> str:
    """The section text, or for a long section the paragraphs that mention the query terms."""
    if len(text) <= limit:
        return text
    paragraphs = [p for p in re.split(r"\n\s*\n|\n(?=- )", text) if p.strip()]
    hits = [p for p in paragraphs if terms & set(_tokens(p))] or paragraphs
    out = ""
    for paragraph in hits:
        if len(out) + len(paragraph) > limit:
            break
        out += paragraph.strip() + "\n"
    return (out or hits[0][:limit]).strip() + " …"


@tool
def search_policies(query: str, max_results: int = 3) -> str:
    """Searches Northwind Labs' HR policies (leave, sick leave, parental leave, remote work, expenses, benefits,
    code of conduct) and returns the most relevant sections with the policy title, to quote and cite.

    Args:
        query: What the person wants to know, in plain words, e.g. "how long is paternity leave".
        max_results: How many sections to return (1-8).
    """
    folder = _data_dir() / "policies"
    sections = _sections(folder)
    if not sections:
        raise FileNotFoundError(f"no HR policies found in {folder}")
    terms = _tokens(query)
    if not terms:
        raise ValueError("the query has no searchable words; ask about a topic such as 'parental leave'")
    # A section's policy title and heading count as part of its text, so "expenses" finds the expenses policy.
    docs = [_tokens(f"{s.policy} {s.heading} {s.heading} {s.text}") for s in sections]
    ranked = sorted(zip(_bm25(terms, docs), range(len(sections))), key=lambda p: (-p[0], p[1]))
    # Sections scoring far below the best one only share a common word like "leave"; leave them out.
    floor = max(ranked[0][0] * 0.35, 1e-9)
    top = [sections[i] for score, i in ranked[: max(1, min(int(max_results), 8))] if score >= floor]
    titles = ", ".join(sorted({s.policy for s in sections}))
    if not top:
        return f'No HR policy section matches "{query}". Policies available: {titles}. Contact {HR_CONTACT}.'
    lines = [f'Policy sections matching "{query}", best first:']
    for number, section in enumerate(top, 1):
        excerpt = _excerpt(section.text, set(terms))
        lines.append(f"\n{number}. {section.policy} — {section.heading} ({section.file})")
        lines.append(excerpt)
    report_sources(*(Source(title=f"{s.policy} — {s.heading}", abstract=_excerpt(s.text, set(terms), 300))
                     for s in top))
    return "\n".join(lines)


# -- leave balance ----------------------------------------------------------------------------------------


def _leave_record(rows: list[dict[str, str]], caller: Caller) -> dict[str, str] | None:
    column = _ID_COLUMNS.get(caller.platform)
    if column:
        for row in rows:
            if (row.get(column) or "").strip() == caller.user:
                return row
    email = (caller.email or "").strip().lower()
    if email:
        for row in rows:
            if (row.get("email") or "").strip().lower() == email:
                return row
    return None


BOOKINGS_FILE = "leave_bookings.csv"
BOOKING_COLUMNS = ("booking_id", "employee_id", "kind", "start", "end", "working_days", "booked_at", "booked_via")
LEAVE_KINDS = ("annual", "sick", "dependant")
DEPENDANT_DAYS_PER_YEAR = 5
MAX_BOOKING_DAYS = 30


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def _bookings(employee_id: str) -> list[dict[str, str]]:
    return [b for b in _read_csv(current_file(_data_dir() / BOOKINGS_FILE)) if b["employee_id"] == employee_id]


def _booked(bookings: list[dict[str, str]], kind: str) -> float:
    return sum(float(b["working_days"]) for b in bookings if b["kind"] == kind)


def _balance(row: dict[str, str]) -> dict:
    bookings = _bookings(row["employee_id"])
    entitlement = _number(row["annual_entitlement_days"])
    carried = _number(row["carried_over_days"])
    taken = _number(row["taken_days"])
    booked = _number(str(float(row["booked_days"] or 0) + _booked(bookings, "annual")))
    return {
        "found": True,
        "employee": row["name"],
        "as_of": row["as_of"],
        "remaining_days": _number(str(entitlement + carried - taken - booked)),
        "entitlement_days": entitlement,
        "carried_over_days": carried,
        "taken_days": taken,
        "booked_days": booked,
        "sick_days_taken": _number(str(float(row["sick_days_taken"] or 0) + _booked(bookings, "sick"))),
        "sick_days_at_full_pay_per_year": 10,
        "dependant_days_taken": _number(str(float(row["dependant_days_taken"] or 0) + _booked(bookings, "dependant"))),
        "dependant_days_per_year": DEPENDANT_DAYS_PER_YEAR,
        "upcoming_bookings": [{"kind": b["kind"], "start": b["start"], "end": b["end"],
                               "working_days": _number(b["working_days"])} for b in bookings],
        "note": "Remaining = entitlement + carried over - taken - booked. Book leave with book_leave (the person "
        "approves it in the chat); carried-over days expire on 31 March.",
    }


def _caller_row() -> dict[str, str] | None:
    with current_file(_data_dir() / "leave.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return _leave_record(rows, current_caller())


def _not_found() -> dict:
    caller = current_caller()
    who = f"{caller.platform} user {caller.user}" + (f", {caller.email}" if caller.email else "")
    return {
        "found": False,
        "message": (
            f"There is no leave record for you ({who}). If you work at Northwind Labs, ask {HR_CONTACT} "
            "to link your chat account to your HR record."
        ),
    }


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be a date like 2026-12-10, got {value!r}") from None


def _working_days(start: dt.date, end: dt.date) -> int:
    return sum(1 for n in range((end - start).days + 1) if (start + dt.timedelta(days=n)).weekday() < 5)


@tool
def book_leave(start: str, end: str, kind: str = "annual") -> dict:
    """Books NEW leave for the person who is asking (never anyone else), from start to end inclusive, after the
    person approves it in the chat; only when they ask to book dates. Leave already booked or taken is in
    leave_balance(), not here. Counts working days (Monday to Friday). Refuses, with the reason, leave in
    the past, overlapping an existing booking, or beyond the remaining balance. Returns the booking and the new
    balance.

    Args:
        start: First day of leave, ISO date like "2026-12-10".
        end: Last day of leave (inclusive), ISO date like "2026-12-11"; same as start for one day.
        kind: "annual" (default), "sick" or "dependant".
    """
    kind = str(kind or "annual").strip().lower()
    if kind not in LEAVE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(LEAVE_KINDS)}, got {kind!r}")
    first, last = _date(start, "start"), _date(end, "end")
    if last < first:
        raise ValueError(f"end ({last}) is before start ({first})")
    if first < dt.date.today() and kind != "sick":
        raise ValueError(f"{first} is in the past; only sick leave can be recorded after the fact")
    days = _working_days(first, last)
    if days == 0:
        raise ValueError(f"{first} to {last} has no working days (Monday to Friday); nothing to book")
    if days > MAX_BOOKING_DAYS:
        raise ValueError(f"{days} working days is more than {MAX_BOOKING_DAYS} in one booking; ask {HR_CONTACT}")
    caller = current_caller()
    target = writable_file(_data_dir() / BOOKINGS_FILE)
    with locked(target):
        row = _caller_row()
        if row is None:
            raise LookupError(_not_found()["message"])
        for booking in _bookings(row["employee_id"]):
            b_start, b_end = dt.date.fromisoformat(booking["start"]), dt.date.fromisoformat(booking["end"])
            if first <= b_end and b_start <= last:
                raise ValueError(f"this overlaps your {booking['kind']} leave from {b_start} to {b_end}; "
                                 "nothing was booked")
        balance = _balance(row)
        if kind == "annual" and days > balance["remaining_days"]:
            raise ValueError(f"this needs {days} days of annual leave but you have "
                             f"{balance['remaining_days']} left; nothing was booked")
        if kind == "dependant" and balance["dependant_days_taken"] + days > DEPENDANT_DAYS_PER_YEAR:
            raise ValueError(f"dependant leave is {DEPENDANT_DAYS_PER_YEAR} days a year and you have taken "
                             f"{balance['dependant_days_taken']}; nothing was booked")
        existing = _read_csv(current_file(_data_dir() / BOOKINGS_FILE))
        booking = {
            "booking_id": f"LV-{uuid.uuid4().hex[:8].upper()}", "employee_id": row["employee_id"], "kind": kind,
            "start": first.isoformat(), "end": last.isoformat(), "working_days": str(days),
            "booked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "booked_via": caller.platform,
        }
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=BOOKING_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows([*existing, booking])
        atomic_write(target, out.getvalue())
    return {"booked": True, "booking_id": booking["booking_id"], "kind": kind, "start": booking["start"],
            "end": booking["end"], "working_days": days, "balance": _balance(row)}


@tool
def leave_balance() -> dict:
    """Returns the annual leave balance, sick days and dependant days of the person who is asking: a flat dict
    with keys employee, as_of, and for annual leave remaining_days, entitlement_days, carried_over_days,
    taken_days (already taken), booked_days (booked, not taken yet); then sick_days_taken,
    sick_days_at_full_pay_per_year, dependant_days_taken, dependant_days_per_year, upcoming_bookings.

    It always answers for the person who sent the message (identified by the chat platform), never for
    anyone else, so it takes no arguments. If found is false, tell the person the message.
    """
    row = _caller_row()
    return _not_found() if row is None else _balance(row)


# -- benefits ---------------------------------------------------------------------------------------------


@tool
def benefits_summary(category: str | None = None) -> dict:
    """Lists Northwind Labs' employee benefit plans (health, retirement, protection, wellbeing, development,
    commuting, remote work) with provider, region, cost to the employee and company contribution. Returns a
    dict with keys company, categories and benefits (a list of dicts, one per plan). For what a policy says
    (leave, allowances, limits, pay), use search_policies instead.

    Args:
        category: Optional category to keep, e.g. "health" or "retirement"; omit for every benefit.
    """
    with (_data_dir() / "benefits.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    categories = sorted({r["category"] for r in rows})
    if category:
        wanted = category.strip().lower()
        rows = [r for r in rows if r["category"].lower() == wanted]
        if not rows:
            raise ValueError(f"unknown benefit category {category!r}; categories are: {', '.join(categories)}. "
                             "For what a policy says (leave, allowances, limits, pay), use search_policies.")
    return {
        "company": "Northwind Labs",
        "categories": categories,
        "benefits": rows,
        "more": f"Full details: the Benefits Overview policy (search_policies) or {HR_CONTACT}.",
    }
