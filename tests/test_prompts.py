"""The system prompt a department's code agent sends the model: its own functions, its worked examples in
the code fences it is told to use, and none of smolagents' notional tools (which small models copy)."""
from __future__ import annotations

import pytest
from smolagents import Model

from agents.agent_factory import TaskScope, build_agent
from agents.chat import Caller
from agents.departments import BUNDLED_COMPANY_DIR, load_company
from agents.prompts import fenced_instructions


def system_prompt(department: str, tags: str | None) -> str:
    company = load_company(BUNDLED_COMPANY_DIR / "departments.toml")
    scope = TaskScope(caller=Caller(platform="slack", workspace="T1", user="U_ALICE"), department=department)
    agent = build_agent(company.departments[department], company, Model(model_id="unused"), None, scope,
                        default_code_tags=tags)
    return agent.memory.system_prompt.system_prompt


@pytest.mark.parametrize("tags, fence", [("markdown", "```python"), ("xml", "<code>")])
def test_marketing_prompt_lists_its_own_functions_and_examples_in_the_agents_fences(tags, fence):
    prompt = system_prompt("marketing", tags)
    for name in ("def campaign_summary(", "def campaign_data(", "def web_research("):
        assert name in prompt
    assert 'report = web_research(task="' in prompt
    assert f"{fence}\nrows = campaign_summary(group_by=\"channel\")" in prompt
    other = "<code>" if fence == "```python" else "```python"
    assert other not in prompt, "examples fenced one way under a prompt asking for the other"
    for notional in ("wikipedia_search", "image_generator", "web_search(", "document_qa"):
        assert notional not in prompt
    assert "pandas" in prompt and "You may import only" in prompt
    assert "save it in the folder OUTPUT_DIR" in prompt


def test_hr_prompt_puts_the_askers_own_leave_first_and_is_far_shorter_than_smolagents_default():
    prompt = system_prompt("hr", "markdown")
    assert prompt.index("def leave_balance(") < prompt.index("def search_policies(")
    assert "Northwind Labs" in prompt and "never look up or discuss anyone else's leave" in prompt
    assert len(prompt) < 12_000, len(prompt)


def test_fences_are_left_alone_for_markdown_and_become_code_tags_otherwise():
    text = "Do this:\n```python\nprint(1)\n```\nthen that."
    assert fenced_instructions(text, "markdown") == text
    assert fenced_instructions(text, None) == "Do this:\n<code>\nprint(1)\n</code>\nthen that."


def test_web_research_sub_agent_gets_the_short_tool_calling_prompt_with_its_own_tools():
    company = load_company(BUNDLED_COMPANY_DIR / "departments.toml")
    scope = TaskScope(caller=Caller(platform="slack", workspace="T1", user="U_ALICE"), department="marketing")
    tool = next(t for t in build_agent(company.departments["marketing"], company, Model(model_id="unused"), None,
                                       scope).tools.values() if t.name == "web_research")
    prompt = tool._agent(None).memory.system_prompt.system_prompt
    assert "- web_search:" in prompt and "- visit_webpage:" in prompt and "- final_answer:" in prompt
    assert '{"name": "final_answer", "arguments": {"answer": "..."}}' in prompt
    assert '2. {"name": "visit_webpage", "arguments": {"url": ' in prompt  # the bundled worked example
    for notional in ("Guangzhou", "image_generator", "document_qa"):
        assert notional not in prompt
    assert len(prompt) < 3_000, len(prompt)
