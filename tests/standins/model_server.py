"""A scripted OpenAI-compatible chat completions server, over real HTTP, that drives agents deterministically.

A script matches a request by a substring of its first user message (the task) and answers with its
N-th reply, N being how many assistant turns the conversation already holds (so step 1 gets reply 0).
Department classification requests (their system prompt carries CLASSIFIER_MARKER) get `classify_answer`.
A reply made with tool_reply() is sent as a real `tool_calls` message (for ToolCallingAgent).

`strict=True` behaves like llama-cpp-python's server: a message whose `content` is a list of parts is
refused with HTTP 500 and a pydantic validation error; `refuse_params` refuses named request parameters
with HTTP 400 the way OpenAI's reasoning models do.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLASSIFIER_MARKER = "agentdesk-router"


def code_reply(code: str, thought: str = "I will run some code.") -> str:
    """A model reply smolagents' CodeAgent accepts."""
    return f"Thought: {thought}\n<code>\n{code.strip()}\n</code>"


def tool_reply(name: str, **arguments) -> str:
    """A reply carrying one tool call (ToolCallingAgent); sent as the message's `tool_calls`."""
    return _TOOL_MARK + json.dumps({"name": name, "arguments": arguments})


_TOOL_MARK = "\x00tool_call:"


@dataclass
class Script:
    match: str
    replies: list[str]
    delay_s: float = 0.0


@dataclass
class Fault:
    """Answer the next `count` requests with this HTTP status (429/500/...) instead of a completion."""

    status: int
    count: int = 1


@dataclass
class ScriptedModel:
    scripts: list[Script] = field(default_factory=list)
    classify_answer: str = "hr"
    default_reply: str = code_reply('final_answer("I have no script for this request.")')
    requests: list[dict] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    strict: bool = False
    refuse_params: frozenset[str] = frozenset()
    refused: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, match: str, *replies: str, delay_s: float = 0.0) -> None:
        with self.lock:
            self.scripts.insert(0, Script(match, list(replies), delay_s))

    def fail_next(self, status: int, count: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(status, count))

    def _text(self, message: dict) -> str:
        content = message.get("content")
        if isinstance(content, list):
            return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""

    def answer(self, body: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(body)
            if self.faults:
                fault = self.faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.pop(0)
                return fault.status, {"error": {"message": f"scripted {fault.status}", "type": "server_error"}}
            refusal = self._refusal(body)
            if refusal is not None:
                self.refused.append(body)
                return refusal
        messages = body.get("messages", [])
        system = " ".join(self._text(m) for m in messages if m.get("role") == "system")
        if CLASSIFIER_MARKER in system:
            return 200, self._completion(body, self.classify_answer)
        tasks = [i for i, m in enumerate(messages) if m.get("role") == "user" and "New task" in self._text(m)]
        with self.lock:
            scripts = list(self.scripts)
        for script in scripts:
            matching = [i for i in tasks if script.match in self._text(messages[i])]
            if not matching:
                continue
            # Reply N for the N-th step of the latest task that matches (follow-ups start again at 0).
            index = sum(1 for m in messages[matching[-1]:] if m.get("role") == "assistant")
            if script.delay_s:
                time.sleep(script.delay_s)
            return 200, self._completion(body, script.replies[min(index, len(script.replies) - 1)])
        return 200, self._completion(body, self.default_reply)

    def _refusal(self, body: dict) -> tuple[int, dict] | None:
        lists = [i for i, m in enumerate(body.get("messages", [])) if isinstance(m.get("content"), list)]
        if self.strict and lists:
            details = "\n".join(f"messages.{i}.typed-dict.content\n  Input should be a valid string" for i in lists)
            return 500, {"error": {"message": f"{len(lists)} validation errors for ChatCompletionRequestMessage\n"
                                              f"{details}", "type": "internal_server_error"}}
        for name in sorted(self.refuse_params & set(body)):
            hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
            return 400, {"error": {"message": f"Unsupported parameter: '{name}' is not supported with this model.{hint}",
                                   "type": "invalid_request_error", "param": name, "code": "unsupported_parameter"}}
        return None

    def _completion(self, body: dict, text: str) -> dict:
        message: dict = {"role": "assistant", "content": text}
        if text.startswith(_TOOL_MARK):
            call = json.loads(text[len(_TOOL_MARK):])
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{len(self.requests)}", "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]}
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
        }


class ModelServer:
    """Runs a ScriptedModel on 127.0.0.1 in a thread; `base_url` ends in /v1."""

    def __init__(self, model: ScriptedModel | None = None) -> None:
        self.model = model or ScriptedModel()
        model_ref = self.model

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": "not found"})
                    return
                status, payload = model_ref.answer(body)
                if status == 200 and body.get("stream"):
                    self._stream(payload)
                else:
                    self._send(status, payload)

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, payload: dict) -> None:
                text = payload["choices"][0]["message"]["content"]
                chunks = [
                    {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
                     "model": payload["model"],
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                    {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
                     "model": payload["model"], "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                     "usage": payload["usage"]},
                ]
                data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "ModelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
