"""The model behind every agent: any OpenAI-compatible endpoint, or Hugging Face inference.

OpenAI-compatible servers differ in what they accept, so the client adapts once per endpoint and
remembers it for the life of the process:
- MODEL_FLATTEN_MESSAGES=auto (the default) sends text-only conversations as plain strings, which every
  server accepts and loses nothing (llama-cpp-python 0.3.36 answers a part list with HTTP 500 and then hangs,
  so detecting by refusal is not safe there); only a conversation with images is sent as part lists, and a
  server that refuses those is remembered and gets them flattened. =1 always flattens, =0 never;
- a reasoning model that refuses `temperature` gets none; one that wants `max_completion_tokens` instead
  of `max_tokens` gets that; one that refuses `stop` gets none (smolagents then cuts the reply itself).
Each adaptation costs one refused request the first time and is logged.

A server without native tool calls (llama-cpp-python's default chat handler) returns the call as text, and
a small model often writes more around it: the `<tools>` list its chat template showed it, the call in a
fence, a second call. The call taken is the first JSON object in the text with a "name", not the span from
the first `{` to the last `}` that smolagents decodes.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid

import openai
from smolagents import InferenceClientModel, Model, OpenAIServerModel
from smolagents.models import (ChatMessage, ChatMessageToolCall, ChatMessageToolCallFunction, MessageRole,
                               parse_json_if_needed)

from agents.settings import Settings

log = logging.getLogger("agentdesk.models")

NO_MODEL_MESSAGE = (
    "No model is configured. Set MODEL_API_BASE, MODEL_ID and MODEL_API_KEY for any OpenAI-compatible "
    "endpoint (for example a local Ollama: MODEL_API_BASE=http://localhost:11434/v1 MODEL_ID=qwen2.5-coder), "
    "or HF_TOKEN for Hugging Face inference."
)

FLATTEN, NO_TEMPERATURE, MAX_COMPLETION_TOKENS, NO_STOP = "flatten", "no_temperature", "max_completion_tokens", "no_stop"

#: (api_base, model_id) -> adaptations learned from the server's refusals; shared by every client.
_LEARNED: dict[tuple[str, str], set[str]] = {}
_LEARNED_LOCK = threading.Lock()


class ModelNotConfigured(RuntimeError):
    pass


def _adaptation(error: openai.APIStatusError, known: set[str], kwargs: dict) -> str | None:
    """Which adaptation a refusal asks for, from its status and message; None when it is not one of them."""
    if error.status_code not in (400, 422, 500):
        return None
    message = str(error.message or "").lower() + " " + str(getattr(error, "body", "") or "").lower()
    if FLATTEN not in known and "content" in message and ("string" in message or " str" in message):
        return FLATTEN
    unsupported = any(w in message for w in ("unsupported", "not supported", "does not support", "only the default",
                                             "not allowed", "unrecognized", "extra inputs", "extra_forbidden"))
    if "max_completion_tokens" in message and "max_tokens" in kwargs and MAX_COMPLETION_TOKENS not in known:
        return MAX_COMPLETION_TOKENS
    if unsupported and "temperature" in message and NO_TEMPERATURE not in known:
        return NO_TEMPERATURE
    if unsupported and "stop" in message and NO_STOP not in known:
        return NO_STOP
    return None


def _has_images(messages) -> bool:
    for message in messages or ():
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") != "text" for p in content):
            return True
    return False


class CompatibleModel(OpenAIServerModel):
    """OpenAIServerModel that adapts to what its server accepts (see the module docstring)."""

    def __init__(self, *args, flatten: str = "auto", **kwargs) -> None:
        super().__init__(*args, flatten_messages_as_text=flatten == "1", **kwargs)
        model_id = kwargs.get("model_id") or (args[0] if args else "")
        self._key = (str(kwargs.get("api_base") or ""), str(model_id))
        self._auto = flatten == "auto"
        if flatten == "1":
            self._learn(FLATTEN, quiet=True)

    @property
    def learned(self) -> set[str]:
        with _LEARNED_LOCK:
            return set(_LEARNED.get(self._key, ()))

    def _learn(self, what: str, quiet: bool = False) -> None:
        with _LEARNED_LOCK:
            _LEARNED.setdefault(self._key, set()).add(what)
        if not quiet:
            log.warning("the model server at %s refused a request; adapting from now on: %s", self._key[0], what)

    @property
    def supports_stop_parameter(self) -> bool:
        return NO_STOP not in self.learned and super().supports_stop_parameter

    def _prepare_completion_kwargs(self, *args, **kwargs) -> dict:
        learned = self.learned
        messages = kwargs.get("messages", args[0] if args else [])
        if FLATTEN in learned or (self._auto and not _has_images(messages)):
            kwargs["flatten_messages_as_text"] = True
        completion = super()._prepare_completion_kwargs(*args, **kwargs)
        if NO_TEMPERATURE in learned:
            completion.pop("temperature", None)
        if MAX_COMPLETION_TOKENS in learned and "max_tokens" in completion:
            completion["max_completion_tokens"] = completion.pop("max_tokens")
        if NO_STOP in learned:
            completion.pop("stop", None)
        return completion

    def parse_tool_calls(self, message: ChatMessage) -> ChatMessage:
        message.role = MessageRole.ASSISTANT
        if not message.tool_calls:
            message.tool_calls = [tool_call_in_text(message.content or "", self.tool_name_key,
                                                    self.tool_arguments_key)]
        for call in message.tool_calls:
            call.function.arguments = parse_json_if_needed(call.function.arguments)
        return message

    def generate(self, *args, **kwargs):
        for _ in range(4):  # at most one refusal per adaptation
            try:
                return super().generate(*args, **kwargs)
            except openai.APIStatusError as exc:
                what = _adaptation(exc, self.learned, {**self.kwargs, **kwargs})
                if what is None or (what == FLATTEN and not self._auto):
                    raise
                self._learn(what)
        return super().generate(*args, **kwargs)


def _first_call(text: str, name_key: str) -> tuple[dict, int] | None:
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    while start != -1:
        try:
            found, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(found, dict) and isinstance(found.get(name_key), str):
            return found, end
        start = text.find("{", end)  # an object without a name (a tool's schema): skip it whole
    return None


def tool_call_in_text(text: str, name_key: str = "name", arguments_key: str = "arguments") -> ChatMessageToolCall:
    """The first JSON object in a model's text reply that names a tool (see the module docstring)."""
    first = _first_call(text, name_key)
    if first is None:
        raise ValueError('no tool call in the reply: answer with one JSON object {"name": "<tool>", "arguments": '
                         '{...}}, e.g. {"name": "final_answer", "arguments": {"answer": "..."}}')
    found = first[0]
    arguments = found.get(arguments_key)
    return ChatMessageToolCall(id=str(uuid.uuid4()), type="function", function=ChatMessageToolCallFunction(
        name=found[name_key], arguments=parse_json_if_needed(arguments) if isinstance(arguments, str) else arguments))


def text_through_first_call(text: str, name_key: str = "name") -> str:
    """A text reply cut after the call that was taken. A small model often writes the whole run in one reply
    (every call, invented results, a final answer); kept in its memory, the next step copies the invented
    answer instead of reading the real Observation."""
    first = _first_call(text, name_key)
    return text if first is None else text[:first[1]]


def build_model(settings: Settings) -> Model:
    """A smolagents model with retries on 429/5xx/timeouts (the openai client's backoff honours Retry-After)."""
    if settings.model_api_base:
        extra: dict = {}
        if settings.model_temperature is not None:
            extra["temperature"] = settings.model_temperature
        if settings.model_max_tokens:
            extra["max_tokens"] = settings.model_max_tokens
        return CompatibleModel(
            model_id=settings.model_id or "default",
            api_base=settings.model_api_base,
            api_key=settings.model_api_key or "not-needed",
            client_kwargs={"max_retries": settings.model_max_retries, "timeout": settings.model_timeout_s},
            retry=False,
            flatten=settings.model_flatten_messages,
            **extra,
        )
    if settings.hf_token:
        kwargs = {"model_id": settings.model_id} if settings.model_id else {}
        return InferenceClientModel(token=settings.hf_token, timeout=int(settings.model_timeout_s), **kwargs)
    raise ModelNotConfigured(NO_MODEL_MESSAGE)
