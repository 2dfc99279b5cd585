"""A burst of 200 signed Slack mentions (plus Slack's own retries) through the real app: every mention is
answered exactly once by exactly one agent run. Latency is reported by bench/load.py, not asserted here."""
from __future__ import annotations

from bench.load import exactly_once, main, parse


async def test_a_burst_of_mentions_is_answered_exactly_once():
    summary = await main(parse(["--n", "200", "--retries", "20", "--timeout", "240"]))
    assert exactly_once(summary), summary
