"""Thread memory as data: the agent's own steps to and from JSON-ready dicts.

The state store (agents.state) keeps them per thread, so a follow-up on any replica, or after a restart,
still has its context.
"""
from __future__ import annotations

from typing import Any

from smolagents.memory import ActionStep, TaskStep, ToolCall
from smolagents.monitoring import AgentLogger, LogLevel, Timing, TokenUsage
from smolagents.utils import AgentError


_QUIET = AgentLogger(level=LogLevel.OFF)


def _step_to_dict(step: Any) -> dict | None:
    if isinstance(step, TaskStep):
        return {"kind": "task", "task": step.task}
    if isinstance(step, ActionStep):
        return {
            "kind": "action",
            "step_number": step.step_number,
            "start": step.timing.start_time,
            "end": step.timing.end_time,
            "model_output": step.model_output if isinstance(step.model_output, str) else None,
            "code_action": step.code_action,
            "tool_calls": [{"name": t.name, "arguments": t.arguments, "id": t.id} for t in step.tool_calls or []],
            "observations": step.observations,
            "error": str(step.error.message) if step.error else None,
            "input_tokens": step.token_usage.input_tokens if step.token_usage else None,
            "output_tokens": step.token_usage.output_tokens if step.token_usage else None,
            "is_final_answer": step.is_final_answer,
        }
    return None


def _step_from_dict(data: dict) -> TaskStep | ActionStep:
    if data["kind"] == "task":
        return TaskStep(task=data["task"])
    usage = None
    if data.get("input_tokens") is not None:
        usage = TokenUsage(input_tokens=data["input_tokens"], output_tokens=data["output_tokens"] or 0)
    return ActionStep(
        step_number=data["step_number"],
        timing=Timing(start_time=data["start"], end_time=data.get("end")),
        model_output=data.get("model_output"),
        code_action=data.get("code_action"),
        tool_calls=[ToolCall(name=t["name"], arguments=t["arguments"], id=t["id"]) for t in data["tool_calls"]]
        or None,
        observations=data.get("observations"),
        error=AgentError(data["error"], _QUIET) if data.get("error") else None,
        token_usage=usage,
        is_final_answer=data.get("is_final_answer", False),
    )




def steps_to_data(steps: list[Any]) -> list[dict]:
    return [d for d in (_step_to_dict(s) for s in steps) if d is not None]


def steps_from_data(data: list[dict]) -> list[TaskStep | ActionStep]:
    return [_step_from_dict(d) for d in data]
