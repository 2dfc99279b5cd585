"""Building a department's agent for one task: a CodeAgent or a ToolCallingAgent, with its sub-agents.

A sub-agent (`managed_agents` in the departments file) is handed to the department's agent as a host-side
tool, so sandboxed code calls it through the same bridge as any tool: it runs here on the host, in the
calling thread (so its spans nest under the calling step), with the caller's identity bound to its tools,
its own step limit and, for a `kind = "code"` sub-agent, its own sandbox from the task's provider. Its
steps go to the thread as StepUpdates with `agent_path` ("Marketing › web_research · step 2").
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from smolagents import CodeAgent, Model, Tool, ToolCallingAgent
from smolagents.agents import MultiStepAgent
from smolagents.memory import ActionStep, FinalAnswerStep
from smolagents.monitoring import LogLevel
from smolagents.utils import AgentError

from agents.chat import Caller, Source, StepUpdate
from agents.departments import Company, Department, SubAgent
from agents.models import text_through_first_call
from agents.prompts import code_prompt_templates, fenced_instructions, tool_calling_prompt_templates
from agents.sandbox import pause_step_clock
from agents.sandbox.base import Sandbox, SandboxProvider
from agents.security import cap
from agents.tools import SourceCollector

if TYPE_CHECKING:
    from agents.approvals import ApprovalGate

CODE_EXCERPT = 1200
OBSERVATION_EXCERPT = 1500
REPORT_LIMIT = 6000
_THOUGHT = re.compile(r"Thought:\s*(.+?)(?:\n|<code>|```|$)", re.S)


@dataclass
class TaskScope:
    """What the agents of one task share: who asked, where their steps and sources go, sandboxes."""

    caller: Caller
    department: str
    #: Posts a sub-agent's step to the thread; thread-safe (called from the agent's worker thread).
    emit: Callable[[StepUpdate], None] = lambda update: None
    sources: SourceCollector = field(default_factory=SourceCollector)
    sandboxes: SandboxProvider | None = None
    redact: Callable[[str | None], str | None] = lambda text: text
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Holds calls of the department's approval-gated tools until a person decides (tool_policy).
    gate: ApprovalGate | None = None
    #: Where tools write files for the person (sent with the answer), and the bot's data folder.
    output_dir: Path | None = None
    state_dir: Path | None = None

    def cancel(self) -> None:
        """The task is over (timeout, stop): running sub-agents stop at their next step, and a tool call
        waiting for approval gives up (before the sandbox goes: the waiting call holds it)."""
        self.cancelled.set()
        if self.gate is not None:
            self.gate.cancel()

    def tools(self, dept: Department, paths: tuple[str, ...] | None = None) -> list[Tool]:
        """A department's tools (or a sub-agent's `paths`) bound to this task, gated ones behind the gate."""
        paths = dept.tools if paths is None else paths
        tools = dept.load_tools(self.caller, self.sources, paths=paths, output_dir=self.output_dir,
                                state_dir=self.state_dir)
        return self.gate.wrap(paths, tools, dept.tool_policy) if self.gate is not None else tools


def code_tags(configured: str | None, default: str | None) -> str | None:
    """smolagents' `code_block_tags` for a department's setting or MODEL_CODE_TAGS ("xml" is its default)."""
    value = configured or default
    return "markdown" if value == "markdown" else None


def base_instructions(name: str, description: str, kind: str) -> str:
    how = "your tools and Python code" if kind == "code" else "your tools"
    return (
        f"You are the {name.upper()} agent of the company ({description}). Answer the person's request using "
        f"{how}. Be concise and factual; say so when your data has no answer. Call final_answer with a short, "
        "well-formatted Markdown answer for a chat thread: a complete sentence with the figures, never None or "
        "a bare variable you have not looked at."
    )


def build_agent(dept: Department, company: Company, model: Model, executor: Sandbox | None, scope: TaskScope, *,
                default_code_tags: str | None = None) -> MultiStepAgent:
    """A new agent for one task (never shared across threads or people) with its sub-agents as tools."""
    tools = scope.tools(dept)
    tools += [SubAgentTool(company.agents[name], dept, model, scope, default_code_tags)
              for name in dept.managed_agents if name in company.agents]
    instructions = base_instructions(dept.name, dept.description, dept.agent)
    if dept.instructions:
        instructions = f"{instructions}\n{dept.instructions}"
    tags = code_tags(dept.code_block_tags, default_code_tags)
    if dept.agent == "tool_calling":
        return ToolCallingAgent(tools=tools, model=model, max_steps=dept.max_steps, instructions=instructions,
                                verbosity_level=LogLevel.OFF, name=f"{dept.name}_agent",
                                prompt_templates=tool_calling_prompt_templates(),
                                step_callbacks=[keep_only_the_call_taken])
    return CodeAgent(
        tools=tools, model=model, executor=executor, additional_authorized_imports=list(dept.authorized_imports),
        max_steps=dept.max_steps, instructions=fenced_instructions(instructions, tags), verbosity_level=LogLevel.OFF,
        name=f"{dept.name}_agent", code_block_tags=tags,
        prompt_templates=code_prompt_templates(), step_callbacks=[nudge_repeats, nudge_no_network, nudge_misread_errors],
    )


# -- steps as the thread shows them -----------------------------------------------------------------------


def _call_title(name: str, arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}
    arguments = arguments if isinstance(arguments, dict) else {}
    if name == "final_answer":
        return "Final answer"
    if name == "web_search":
        return f"searching “{arguments.get('query', '')}”"
    if name == "visit_webpage":
        return f"visiting {arguments.get('url', '')}"
    return f"asking {name}" if name.endswith("research") or "task" in arguments else f"calling {name}"


def step_title(step: ActionStep) -> str:
    """A short title: the model's stated thought for code steps, what it called for tool-calling steps."""
    if step.is_final_answer:
        return "Final answer"
    if step.code_action is None and step.tool_calls:
        return ", ".join(_call_title(c.name, c.arguments) for c in step.tool_calls)[:100]
    if isinstance(step.model_output, str):
        match = _THOUGHT.search(step.model_output)
        if match:
            return match.group(1).strip().split(". ")[0][:100].rstrip(".")
    return "Working"


REPEAT_NOTE = ("\nNote: this is exactly the code of your previous step, with the same result. Do not run it "
               "again: answer now with final_answer(...) using the figures above, or do something different.")


def nudge_repeats(step: ActionStep, agent: MultiStepAgent) -> None:
    """Greedy small models re-run the same code forever after reading its result; tell them so, once per repeat.

    Called before smolagents appends the step, so the previous step is the last one in memory.
    """
    previous = next((s for s in reversed(agent.memory.steps) if isinstance(s, ActionStep)), None)
    code = (step.code_action or "").strip()
    if code and previous is not None and code == (previous.code_action or "").strip():
        step.observations = (step.observations or "") + REPEAT_NOTE


NETWORK_IMPORT = re.compile(r"Import of (requests|urllib\S*|httpx|aiohttp|bs4|socket|http\.client)\b is not allowed")
#: The same imports in code that failed before it ran (a syntax error further down hides the import error).
NETWORK_CODE = re.compile(r"^\s*(import|from)\s+(requests|urllib\S*|httpx|aiohttp|bs4|socket|http\.client)\b", re.M)


def nudge_no_network(step: ActionStep, agent: MultiStepAgent) -> None:
    """Small models reach for `requests` when asked to look something up online, and retry it until the step
    limit; the sandbox has no network by design. The error they read names the web sub-agent they have."""
    researchers = [t.name for t in agent.tools.values() if isinstance(t, SubAgentTool)
                   and any("web" in path for path in t.spec.tools)]
    if researchers and step.error is not None and (NETWORK_IMPORT.search(str(step.error.message))
                                                   or NETWORK_CODE.search(step.code_action or "")):
        _prefix_error(step, NETWORK_NOTE.format(name=researchers[0]))


def _prefix_error(step: ActionStep, note: str) -> None:
    """Puts a note in front of the step's error, once; the model's memory shows str(error), hence args."""
    message = str(step.error.message)
    if not message.startswith(note):
        step.error.message = note + message
        step.error.args = (step.error.message,)


TEXT_INDEX = re.compile(r"Could not index .* with '[^']*': TypeError: string indices must be integers", re.S)
TEXT_INDEX_NOTE = ("That result is text (a str), not a dict: it has no ['...'] keys. Do not parse it; put the text "
                   "itself in your answer, e.g. final_answer(f\"Here is what I found:\\n\\n{text}\"). ")
NO_CODE = re.compile(r"^Error in code parsing", re.I)
NO_CODE_NOTE = ("Your reply had no code. Answers come from your tools, never from memory: reply with a short "
                "thought, then one code block that calls a tool and ends with final_answer(...). ")


UNDEFINED = re.compile(r"The variable `(\w+)` is not defined")
#: The usual alias -> the import that defines it.
ALIASES = {"plt": "import matplotlib.pyplot as plt", "pd": "import pandas as pd", "np": "import numpy as np"}


def nudge_misread_errors(step: ActionStep, agent: MultiStepAgent) -> None:
    """Errors small models retry unchanged until the step limit: indexing a tool's text answer like the dict of
    another tool's example, a reply of prose with no code, and a module alias used without its import. The
    error they read next says what to do."""
    if step.error is None:
        return
    message = str(step.error.message)
    note = next((n for pattern, n in ((TEXT_INDEX, TEXT_INDEX_NOTE), (NO_CODE, NO_CODE_NOTE))
                 if pattern.search(message)), None)
    undefined = UNDEFINED.search(message)
    if note is None and undefined and undefined.group(1) in ALIASES:
        note = f"Start your code with `{ALIASES[undefined.group(1)]}`: every step imports what it uses. "
    if note:
        _prefix_error(step, note)


NETWORK_NOTE = ('Your code has no internet access: for anything on the web, write report = {name}(task="the '
                'whole question") and then final_answer(report). ')


def keep_only_the_call_taken(step: ActionStep, agent: MultiStepAgent) -> None:
    """A tool-calling step keeps in memory only its reply up to the call that ran (text_through_first_call)."""
    if step.tool_calls and isinstance(step.model_output, str):
        step.model_output = text_through_first_call(step.model_output)
        if step.model_output_message is not None:
            step.model_output_message.content = step.model_output


def clean_observation(text: str | None) -> str | None:
    """The step's printed output and result, without smolagents' scaffolding lines (or agentdesk's own)."""
    if not text:
        return text
    text = text.replace(REPEAT_NOTE, "").replace("Execution logs:\n", "")
    text = re.sub(r"\n?Last output from code snippet:\n(None)?", "\n", text)
    return text.strip() or None


def step_update(department: str, step: ActionStep, redact: Callable[[str | None], str | None], *,
                agent_path: tuple[str, ...] = (), sources: tuple[Source, ...] = ()) -> StepUpdate:
    usage = step.token_usage
    return StepUpdate(
        department=department,
        step_number=step.step_number,
        title=redact(step_title(step)) or "Working",
        code=cap(redact(step.code_action), CODE_EXCERPT),
        observation=cap(redact(clean_observation(step.observations)), OBSERVATION_EXCERPT),
        error=cap(redact(str(step.error.message)) if step.error else None, OBSERVATION_EXCERPT),
        duration_s=step.timing.duration if step.timing and step.timing.end_time else None,
        input_tokens=usage.input_tokens if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        is_final=step.is_final_answer,
        agent_path=agent_path,
        sources=sources,
    )


# -- sub-agents -------------------------------------------------------------------------------------------

_SUB_TASK = (
    "Your manager, the {department} agent, gives you this task:\n{task}\n\n"
    "Do the task with your tools, then call final_answer with a short report of what you found: the facts "
    "with the url of each source you used. If you could not find it, say so."
)


class SubAgentTool(Tool):
    """A managed sub-agent as a tool: `web_research(task="...")` runs it to the end and returns its report."""

    inputs = {"task": {"type": "string", "description": "The complete task for this agent, in plain words, "
                                                        "with every detail it needs (it cannot see the conversation)."}}
    output_type = "string"
    skip_forward_signature_validation = True

    def __init__(self, spec: SubAgent, dept: Department, model: Model, scope: TaskScope,
                 default_code_tags: str | None) -> None:
        self.name = spec.name
        self.description = f"A team member agent: {spec.description}. Returns its report as text."
        self.spec = spec
        self.dept = dept
        self.model = model
        self.scope = scope
        self.default_code_tags = default_code_tags
        super().__init__()

    def _agent(self, executor: Sandbox | None) -> MultiStepAgent:
        spec = self.spec
        tools = self.scope.tools(self.dept, spec.tools)
        instructions = base_instructions(spec.name, spec.description, spec.kind)
        if spec.instructions:
            instructions = f"{instructions}\n{spec.instructions}"
        if spec.kind == "code":
            tags = code_tags(spec.code_block_tags, self.default_code_tags)
            return CodeAgent(tools=tools, model=self.model, executor=executor, max_steps=spec.max_steps,
                             additional_authorized_imports=list(spec.authorized_imports),
                             instructions=fenced_instructions(instructions, tags),
                             verbosity_level=LogLevel.OFF, name=spec.name, code_block_tags=tags,
                             prompt_templates=code_prompt_templates(),
                             step_callbacks=[nudge_repeats, nudge_misread_errors])
        return ToolCallingAgent(tools=tools, model=self.model, max_steps=spec.max_steps, instructions=instructions,
                                verbosity_level=LogLevel.OFF, name=spec.name,
                                prompt_templates=tool_calling_prompt_templates(),
                                step_callbacks=[keep_only_the_call_taken])

    def forward(self, task: str) -> str:
        scope = self.scope
        if scope.cancelled.is_set():
            raise RuntimeError("the task was stopped")
        if not str(task).strip():
            raise ValueError(f"{self.name} needs a task, e.g. {self.name}(task=\"...\")")
        sandbox: Sandbox | None = None
        try:
            if self.spec.kind == "code":
                if scope.sandboxes is None:
                    raise RuntimeError(f"{self.name} runs code and no sandbox is available to it")
                sandbox = scope.sandboxes.acquire(authorized_imports=list(self.spec.authorized_imports),
                                                  step_timeout_s=self.spec.step_timeout_s, caller=scope.caller)
            agent = self._agent(sandbox)
            output: Any = None
            finished = False
            seen: set[int] = set()
            # The caller's step deadline stops while the sub-agent works: it runs whole model steps of its own,
            # bounded by its max_steps (and its own sandbox's step timeout), and the task's timeout bounds all.
            with pause_step_clock():
                for event in agent.run(_SUB_TASK.format(department=self.dept.name.upper(), task=task), stream=True,
                                       max_steps=self.spec.max_steps):
                    if scope.cancelled.is_set():
                        agent.interrupt()
                    if isinstance(event, ActionStep) and event.step_number not in seen:
                        seen.add(event.step_number)
                        finished = finished or event.is_final_answer
                        scope.emit(step_update(scope.department, event, scope.redact, agent_path=(self.name,),
                                               sources=scope.sources.take_new()))
                    elif isinstance(event, FinalAnswerStep):
                        output = event.output
        except AgentError as exc:
            raise RuntimeError(f"{self.name} could not finish: {exc}") from None
        finally:
            if sandbox is not None:
                sandbox.cleanup()
        report = output if isinstance(output, str) else json.dumps(output, default=str, ensure_ascii=False)
        if not finished:
            report = f"(stopped at its limit of {self.spec.max_steps} steps; this may be incomplete)\n{report}"
        return cap(report, REPORT_LIMIT) or f"{self.name} returned nothing"
