"""Accuracy of the department agents against a real model, and of a plain smolagents CodeAgent as the baseline.

Questions across HR, Sales and Marketing have answers derived from the bundled company data (the asker's own
leave, policies named, regional quotes, ROAS by channel, a chart from an uploaded CSV, web research through
the web_research sub-agent against the loopback SearXNG stand-in). Each is asked through the real runner
and sandbox (SANDBOX, default docker) with the configured model (MODEL_API_BASE, MODEL_ID, MODEL_API_KEY and
the MODEL_* compatibility settings), then, unless --no-baseline, by a plain smolagents CodeAgent with the
same tools, sub-agent and model client (flattened messages, smolagents' default prompt and code tags, the
local executor). Not part of the test suite: it needs a model.

    ../shared/tools/local-model.sh &     # Qwen2.5-Coder-1.5B on http://127.0.0.1:8765/v1
    MODEL_API_BASE=http://127.0.0.1:8765/v1 MODEL_ID=local MODEL_API_KEY=none MODEL_CODE_TAGS=markdown \\
        .venv/bin/python bench/eval.py [--only hr,sales] [--limit 3] [--no-baseline]
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smolagents import CodeAgent, OpenAIServerModel, ToolCallingAgent  # noqa: E402
from smolagents.memory import ActionStep, FinalAnswerStep  # noqa: E402
from smolagents.monitoring import LogLevel  # noqa: E402

from agents.chat import Attachment, ChatRequest  # noqa: E402
from agents.departments import BUNDLED_COMPANY_DIR, load_company  # noqa: E402
from agents.runner import TaskRunner  # noqa: E402
from agents.settings import Settings  # noqa: E402
from tests.standins.search_server import SearchStandIn  # noqa: E402
from tests.support import RecordingReplier  # noqa: E402

REGIONS_CSV = [
    ("region", "spend", "revenue"), ("North", "12000", "30000"), ("South", "8000", "36000"),
    ("East", "15000", "27000"), ("West", "5000", "9000"),
]


@dataclass(frozen=True)
class Question:
    department: str
    text: str
    expect: tuple[str, ...]  # regexes that must all match the answer (case-insensitive, thousands commas removed)
    user: str = "U_ALICE"
    upload: bool = False
    chart: bool = False


QUESTIONS = [
    Question("hr", "How many days of annual leave do I have left?", (r"\b15\b",)),
    Question("hr", "How many weeks of paternity leave at full salary does a non-birth parent get? Name the policy.",
             (r"\b16\b", r"parental leave")),
    Question("hr", "How many days of annual leave do I have left?", (r"\b10\.5\b",), user="U_BOB"),
    Question("hr", "For how many working days is sickness paid at full salary? Name the policy.",
             (r"\b10\b", r"sick")),
    Question("hr", "How many days of annual leave have I taken so far?", (r"\b6\b",), user="U_CARLA"),
    Question("hr", "What is the hotel limit per night in London? Name the policy.", (r"\b300\b", r"expense")),
    Question("hr", "How many leave days have I booked but not taken yet?", (r"\b3\b",), user="U_DEEPAK"),
    Question("hr", "How big is the one-off home office allowance? Name the policy.", (r"\b500\b", r"remote")),
    Question("sales", "Quote 60 NW-AQ100 sensors for the EU.", (r"9082\.26", r"eur|€")),
    Question("sales", "Which product measures VOC? Give its SKU.", (r"NW-AQ200",)),
    Question("sales", "Quote 10 NW-AQ200 for the UK.", (r"2337(\.00?)?\b", r"gbp|£")),
    Question("sales", "What volume discount applies to 60 NW-AQ100 in the EU?", (r"10 ?%|0\.1\b",)),
    Question("sales", "Quote 120 NW-OC100 for APAC.", (r"11673\.9",)),
    Question("sales", "What do 5 NW-OC300 cost in the US?", (r"\b295(\.00?)?\b",)),
    Question("marketing", "Which channel had the highest ROAS?", (r"email", r"9\.18")),
    Question("marketing", "Research on the web: what is the launch price of the Airwise AW-3 sensor?", (r"179",)),
    Question("marketing", "Which region in the attached file had the highest revenue?", (r"south",), upload=True),
    Question("marketing", "Make a bar chart of spend by region from the attached file.", (), upload=True, chart=True),
    Question("marketing", "What was the ROAS of LinkedIn?", (r"2\.15",)),
    Question("marketing", "Research on the web: how much did Sensora raise in its Series C?", (r"\$?40 ?(million|m)\b",)),
    Question("marketing", "How much did we spend on Paid Search in total?", (r"78870",)),
    Question("marketing", "Which channel has a ROAS below 1?", (r"display",)),
]


@dataclass
class Outcome:
    ok: bool
    steps: int
    tokens: int
    seconds: float
    answer: str
    error: str = ""
    trace: list = field(default_factory=list)


@dataclass
class Totals:
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    def add(self, department: str, outcome: Outcome) -> None:
        self.outcomes.setdefault(department, []).append(outcome)


def correct(question: Question, answer: str, files: list[str]) -> bool:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", answer or "")
    if question.chart and not any(name.lower().endswith(".png") for name in files):
        return False
    return all(re.search(pattern, text, re.I) for pattern in question.expect)


def eval_company(workdir: Path) -> Path:
    """The bundled departments file with its data folders absolute and the loopback search stand-in allowed."""
    text = (BUNDLED_COMPANY_DIR / "departments.toml").read_text(encoding="utf-8")
    for name in ("hr", "sales", "marketing"):
        text = text.replace(f'data_dir = "{name}"', f'data_dir = "{BUNDLED_COMPANY_DIR / name}"')
    text = text.replace("allow_private = []", 'allow_private = ["127.0.0.1"]')
    path = workdir / "departments.toml"
    path.write_text(text, encoding="utf-8")
    return path


def upload_file(workdir: Path) -> Path:
    path = workdir / "regions.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(REGIONS_CSV)
    return path


async def ask_runner(runner: TaskRunner, question: Question, upload: Path, n: int) -> Outcome:
    attachments = (Attachment(name=upload.name, path=upload, size=upload.stat().st_size),) if question.upload else ()
    request = ChatRequest(platform="slack", workspace="T_EVAL", channel="C_EVAL", thread=f"1700000000.{n:06d}",
                          user=question.user, text=f"{question.department}: {question.text}", attachments=attachments,
                          message_id=f"1700000000.{n:06d}", user_name=question.user)
    replier = RecordingReplier()
    started = time.monotonic()
    await runner.handle(request, replier)
    seconds = time.monotonic() - started
    if not replier.finals:
        return Outcome(False, len(replier.steps), 0, seconds, "", "; ".join(replier.errors))
    answer = replier.finals[-1]
    return Outcome(correct(question, answer.text, [f.name for f in answer.files]), answer.steps,
                   answer.input_tokens + answer.output_tokens, seconds, answer.text, trace=replier.steps)


def baseline_agent(settings: Settings, company, question: Question, caller) -> CodeAgent:
    """The seed's way: CodeAgent + a managed ToolCallingAgent, smolagents' defaults, the same tools and model."""
    extra = {k: v for k, v in (("temperature", settings.model_temperature), ("max_tokens", settings.model_max_tokens))
             if v is not None}
    model = OpenAIServerModel(model_id=settings.model_id or "default", api_base=settings.model_api_base,
                              api_key=settings.model_api_key or "none", flatten_messages_as_text=True,
                              client_kwargs={"timeout": settings.model_timeout_s}, **extra)
    dept = company.departments[question.department]
    managed = []
    for name in dept.managed_agents:
        spec = company.agents[name]
        managed.append(ToolCallingAgent(tools=dept.load_tools(caller, paths=spec.tools), model=model, name=name,
                                        description=spec.description, max_steps=spec.max_steps,
                                        verbosity_level=LogLevel.OFF))
    return CodeAgent(tools=dept.load_tools(caller), model=model, managed_agents=managed,
                     additional_authorized_imports=list(dept.authorized_imports), max_steps=dept.max_steps,
                     verbosity_level=LogLevel.OFF)


def ask_baseline(settings: Settings, company, question: Question, upload: Path, workdir: Path) -> Outcome:
    from agents.chat import Caller

    caller = Caller(platform="slack", workspace="T_EVAL", user=question.user)
    out = Path(tempfile.mkdtemp(dir=workdir))
    agent = baseline_agent(settings, company, question, caller)
    task = question.text + (f"\nThe file is at {upload}." if question.upload else "")
    if question.chart:
        task += f"\nSave the chart as a PNG file in {out}."
    started = time.monotonic()
    steps = tokens = 0
    answer = ""
    try:
        for event in agent.run(task, stream=True, max_steps=company.departments[question.department].max_steps):
            if isinstance(event, ActionStep):
                steps += 1
                if event.token_usage:
                    tokens += event.token_usage.total_tokens
            elif isinstance(event, FinalAnswerStep):
                answer = str(event.output)
    except Exception as exc:  # noqa: BLE001 - a failed run counts as wrong, with why
        return Outcome(False, steps, tokens, time.monotonic() - started, "", f"{type(exc).__name__}: {exc}")
    files = [p.name for p in out.iterdir()]
    return Outcome(correct(question, answer, files), steps, tokens, time.monotonic() - started, answer)


def report(title: str, totals: Totals) -> tuple[int, int]:
    print(f"\n{title}")
    print(f"  {'department':<11} {'correct':>9} {'accuracy':>9} {'steps':>6} {'tokens':>8} {'seconds':>8}")
    all_ok = all_n = 0
    for department, outcomes in totals.outcomes.items():
        ok = sum(o.ok for o in outcomes)
        n = len(outcomes)
        all_ok, all_n = all_ok + ok, all_n + n
        print(f"  {department:<11} {ok:>4}/{n:<4} {ok / n:>8.0%} {sum(o.steps for o in outcomes) / n:>6.1f} "
              f"{sum(o.tokens for o in outcomes) / n:>8.0f} {sum(o.seconds for o in outcomes) / n:>8.1f}")
    if all_n:
        print(f"  {'all':<11} {all_ok:>4}/{all_n:<4} {all_ok / all_n:>8.0%}   (steps, tokens, seconds: mean per question)")
    return all_ok, all_n


async def main() -> int:
    parser = argparse.ArgumentParser(description="Evaluate the department agents against the configured model.")
    parser.add_argument("--only", default="", help="comma-separated departments to ask (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many questions per department")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain smolagents baseline")
    parser.add_argument("--baseline-only", action="store_true", help="ask only the plain smolagents baseline")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--trace", action="store_true", help="print each step's code and output (agentdesk runs)")
    parser.add_argument("--question", type=int, action="append", default=[],
                        help="ask only this question (index in the set; repeatable)")
    args = parser.parse_args()
    settings = Settings.from_env()
    if not settings.model_api_base:
        print("Set MODEL_API_BASE (and MODEL_ID, MODEL_API_KEY) to the model to evaluate.", file=sys.stderr)
        return 2
    only = {d.strip() for d in args.only.split(",") if d.strip()}
    questions, seen = [], {}
    for index, q in enumerate(QUESTIONS):
        if args.question and index not in args.question:
            continue
        if (not only or q.department in only) and (not args.limit or seen.get(q.department, 0) < args.limit):
            questions.append(q)
            seen[q.department] = seen.get(q.department, 0) + 1

    with tempfile.TemporaryDirectory() as tmp, SearchStandIn() as search:
        workdir = Path(tmp)
        os.environ.update(SEARCH_PROVIDER="searxng", SEARCH_API_URL=search.search_url)
        settings = dataclasses.replace(settings, config_path=eval_company(workdir), data_dir=workdir / "state",
                                       user_rate_per_minute=10_000, otlp_endpoint=None)
        company = load_company(settings.config_path)
        upload = upload_file(workdir)
        print(f"model {settings.model_id} at {settings.model_api_base}; sandbox {settings.sandbox}; "
              f"{len(questions)} questions")

        ours = Totals()
        runner = TaskRunner(settings, company=company)
        await runner.start()
        try:
            for n, question in enumerate(() if args.baseline_only else questions):
                outcome = await ask_runner(runner, question, upload, n)
                ours.add(question.department, outcome)
                _show(args.verbose, "agentdesk", question, outcome, args.trace)
        finally:
            await runner.close()
        ok, _ = report("agentdesk (runner, sandbox, department settings)", ours)
        total = len(questions)

        if not args.no_baseline:
            base = Totals()
            for question in questions:
                outcome = await asyncio.to_thread(ask_baseline, settings, company, question, upload, workdir)
                base.add(question.department, outcome)
                _show(args.verbose, "baseline", question, outcome)
            report("agentdesk (runner, sandbox, department settings)", ours)
            base_ok, _ = report("baseline (plain smolagents CodeAgent, same tools and model)", base)
            print(f"\nagentdesk {ok}/{total} vs baseline {base_ok}/{total}")
    return 0


def _show(verbose: bool, who: str, question: Question, outcome: Outcome, trace: bool = False) -> None:
    mark = "ok " if outcome.ok else "BAD"
    line = f"[{who}] {mark} {question.department}: {question.text[:60]} ({outcome.steps} steps, {outcome.seconds:.0f} s)"
    print(line, flush=True)
    for step in outcome.trace if trace else ():
        where = " › ".join(step.agent_path) or step.department
        print(f"   -- {where} step {step.step_number}: {step.title}")
        for label, text in (("code", step.code), ("out", step.observation), ("error", step.error)):
            if text:
                print(f"      {label}: " + text.replace("\n", "\n        "), flush=True)
    if verbose or not outcome.ok:
        print("      " + (outcome.answer or outcome.error or "(no answer)").replace("\n", "\n      ")[:600], flush=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
