"""The agents' system prompts: short, with only the agent's own functions or tools in it.

smolagents' default prompt is ~2,500 tokens of examples with notional tools (`wikipedia_search`,
`image_generator`, ...). A small model copies those tools into its code and loops on "not among the
explicitly allowed tools" errors; a large one pays for the tokens on every step. This prompt keeps the
Thought/code/observation cycle smolagents parses and the rules that matter in a sandbox; the worked
examples come from each department's instructions. The planning and final-answer templates stay
smolagents' own. Tool-calling agents (web_research, `agent = "tool_calling"` departments) get the same
treatment: smolagents' ~900-token prompt of notional calls is replaced by the one JSON form and four rules.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

import yaml

def _team_and_instructions(call_as: str) -> str:
    """The prompts' common end: the managed agents, then the department's own instructions."""
    return (
        "{%- if managed_agents and managed_agents.values() | list %}\n"
        f"Team members you can give a task to, {call_as}:\n"
        "{%- for agent in managed_agents.values() %}\n"
        "- {{ agent.name }}: {{ agent.description }}\n"
        "{%- endfor %}\n"
        "{%- endif %}\n"
        "{%- if custom_instructions %}\n\n"
        "{{custom_instructions}}\n"
        "{%- endif %}\n"
    )


CODE_SYSTEM_PROMPT = """\
You answer requests by writing Python code, step by step. Each step is exactly:
Thought: one short sentence saying what you will do.
{{code_block_opening_tag}}
# Python code
{{code_block_closing_tag}}
The code runs at once; whatever it prints comes back to you as the next step's "Observation".

Rules:
1. Call only the functions listed below, with keyword arguments as shown. They already exist: never import,
   define, stub or imagine other functions.
2. Every fact and figure in your answer must come from a function's result or from a file; never invent one.
   If a result's shape is not shown in your instructions, print() it in one step and use it in the next.
3. Variables and imports persist between steps. You may import only: {{authorized_imports}}.
4. Finish with final_answer("...") inside a code block: a complete, friendly sentence (or a short Markdown
   list or table) with the figures and their source, never None or a bare variable you have not seen.
5. If an Observation shows an error, fix that line; do not repeat code that failed.
6. Only when the person asks for a file or a chart, save it in the folder OUTPUT_DIR (a variable that already
   exists); every file left there is sent to them.

Your functions:
{{code_block_opening_tag}}
{%- for tool in tools.values() %}
{{ tool.to_code_prompt() }}
{% endfor %}
{{code_block_closing_tag}}
""" + _team_and_instructions('like a function: name(task="the complete task in plain words")')


TOOL_CALLING_SYSTEM_PROMPT = """\
You answer requests by calling tools, one call per reply. A reply is only the call, one JSON object:
{"name": "<tool name>", "arguments": {"<argument>": "<value>"}}
The tool's result comes back to you as an Observation; then you make the next call.

Rules:
1. Call only the tools listed below, with the arguments they take, written as values (never variable names).
2. Every fact and figure in your answer must come from a tool's result; never invent one.
3. Never repeat a call you already made with the same arguments.
4. Finish by calling final_answer with a complete sentence with the facts (and their sources):
{"name": "final_answer", "arguments": {"answer": "..."}}

Your tools:
{%- for tool in tools.values() %}
- {{ tool.to_tool_calling_prompt() }}
{%- endfor %}
""" + _team_and_instructions("like a tool, with the argument task (the complete task in plain words)")


@functools.cache
def _smolagents_templates(kind: str) -> dict[str, Any]:
    text = resources.files("smolagents.prompts").joinpath(f"{kind}_agent.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _templates(kind: str, system_prompt: str) -> dict[str, Any]:
    """smolagents' templates of that kind with agentdesk's system prompt (a fresh copy: agents may mutate it)."""
    templates = {key: (dict(value) if isinstance(value, dict) else value)
                 for key, value in _smolagents_templates(kind).items()}
    templates["system_prompt"] = system_prompt
    return templates


def code_prompt_templates() -> dict[str, Any]:
    return _templates("code", CODE_SYSTEM_PROMPT)


def tool_calling_prompt_templates() -> dict[str, Any]:
    return _templates("toolcalling", TOOL_CALLING_SYSTEM_PROMPT)


_FENCE = re.compile(r"```(?:python|py)?\n(.*?)\n```", re.S)


def fenced_instructions(text: str, code_block_tags: str | None) -> str:
    """A department's worked examples (written with ```python fences) in the fences its agent is told to use.

    A small model copies the fences of its examples; examples fenced one way under a prompt that asks for
    the other make it mix both, and smolagents then cannot find the code.
    """
    if code_block_tags == "markdown":
        return text
    return _FENCE.sub(lambda m: f"<code>\n{m.group(1)}\n</code>", text)
