"""Marketing tools: the company's campaign performance data, raw and summarised.

Data (bundled example: agents/company/marketing/campaigns.csv). The folder is the department's `data_dir`,
or AGENTDESK_MARKETING_DATA_DIR when set.

Tools return data only. Charts are drawn by the agent's own code in the sandbox (pandas and matplotlib,
saving PNGs into OUTPUT_DIR), which keeps plotting libraries and files out of the host process.
"""
from __future__ import annotations

import csv
from pathlib import Path

from smolagents import tool

from agents.departments import resolve_data_dir

ENV_VAR = "AGENTDESK_MARKETING_DATA_DIR"
GROUP_COLUMNS = ("campaign", "channel", "month")
_COUNTS = ("impressions", "clicks", "conversions")
_MONEY = ("spend", "revenue")


def _data_dir() -> Path:
    return resolve_data_dir("marketing", ENV_VAR)


def _rows() -> list[dict]:
    with (_data_dir() / "campaigns.csv").open(newline="", encoding="utf-8") as handle:
        rows = []
        for raw in csv.DictReader(handle):
            row: dict = {k: raw[k].strip() for k in GROUP_COLUMNS}
            row.update({k: round(float(raw[k]), 2) for k in _MONEY})
            row.update({k: int(raw[k]) for k in _COUNTS})
            rows.append(row)
        return rows


def _ratio(numerator: float, denominator: float, digits: int = 4) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


@tool
def campaign_data() -> list:
    """Returns every row of Northwind Labs' marketing campaign data, one dict per campaign, channel and month:
    campaign, channel, month ("YYYY-MM"), spend and revenue (USD), impressions, clicks, conversions.
    Load it with pandas.DataFrame(campaign_data()) to analyse or chart it.
    """
    return _rows()


@tool
def campaign_summary(group_by: str) -> list:
    """Totals campaign performance grouped by campaign, channel or month, with derived metrics: ctr
    (clicks/impressions), conversion_rate (conversions/clicks), cpc and cpa (spend per click/conversion) and
    roas (revenue/spend). Sorted by revenue, highest first. Returns a list of dicts, one per group, with the
    group's key (e.g. channel) and spend, revenue, impressions, clicks, conversions, ctr, conversion_rate, cpc,
    cpa, roas.

    Args:
        group_by: "campaign", "channel" or "month", or several joined by commas, e.g. "campaign,month".
    """
    keys = [k.strip().lower() for k in group_by.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GROUP_COLUMNS]
    if not keys or unknown:
        raise ValueError(f"group_by must be one or more of {', '.join(GROUP_COLUMNS)}, got {group_by!r}")
    groups: dict[tuple, dict] = {}
    for row in _rows():
        group = groups.setdefault(
            tuple(row[k] for k in keys),
            {**{k: row[k] for k in keys}, **{m: 0 for m in _MONEY + _COUNTS}},
        )
        for metric in _MONEY + _COUNTS:
            group[metric] += row[metric]
    out = []
    for group in groups.values():
        for metric in _MONEY:
            group[metric] = round(group[metric], 2)
        group["ctr"] = _ratio(group["clicks"], group["impressions"])
        group["conversion_rate"] = _ratio(group["conversions"], group["clicks"])
        group["cpc"] = _ratio(group["spend"], group["clicks"], 2)
        group["cpa"] = _ratio(group["spend"], group["conversions"], 2)
        group["roas"] = _ratio(group["revenue"], group["spend"], 2)
        out.append(group)
    return sorted(out, key=lambda g: -g["revenue"])
