"""Which department answers a request (prefix, thread, channel map, then one constrained model call), and
whether its access policy lets this person ask it here."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Callable

from smolagents import Model
from smolagents.models import ChatMessage, MessageRole

from agents.chat import ChatRequest
from agents.departments import Company, Department
from agents.state import StateStore

log = logging.getLogger("agentdesk.routing")
audit = logging.getLogger("agentdesk.audit")

CLASSIFIER_MARKER = "agentdesk-router"
_PREFIX = re.compile(r"^\s*([A-Za-z][\w-]*)\s*:\s*(.*)$", re.S)
_WORD = re.compile(r"[a-z0-9]+")


class RoutingError(Exception):
    """The request cannot be routed; the message is for the person who asked."""


@dataclass(frozen=True)
class Route:
    department: Department
    text: str
    reason: str  # prefix | thread | channel | only | classifier | keywords


class Router:
    def __init__(self, company: Company, store: StateStore, model_factory: Callable[[], Model]) -> None:
        self.company = company
        self.store = store
        self.model_factory = model_factory

    async def route(self, request: ChatRequest) -> Route:
        """The route of a request; the classifier's model call runs in a worker thread."""
        text = request.text.strip()
        prefixed, rest = self._prefix(text)
        existing = await self.store.thread_department(request.thread_key)
        if existing and existing in self.company.departments:
            if prefixed and prefixed.name != existing and request.is_direct:
                # A DM / Teams personal chat is one endless thread: a prefix switches department there.
                return Route(prefixed, rest, "prefix")
            if prefixed and prefixed.name != existing:
                raise RoutingError(
                    f"This thread is with the {existing.upper()} agent. To ask {prefixed.name.upper()}, start a "
                    f"new message (outside this thread) with `{prefixed.name}: …`."
                )
            return Route(self.company.departments[existing], rest if prefixed else text, "thread")
        if prefixed:
            return Route(prefixed, rest, "prefix")
        by_channel = self.company.department_for_channel(request.channel, request.channel_name)
        if by_channel:
            return Route(by_channel, text, "channel")
        if len(self.company.departments) == 1:
            return Route(next(iter(self.company.departments.values())), text, "only")
        return await asyncio.to_thread(self._classify, text)

    def _prefix(self, text: str) -> tuple[Department | None, str]:
        match = _PREFIX.match(text)
        if match and match.group(1).lower() in self.company.departments:
            return self.company.departments[match.group(1).lower()], match.group(2).strip()
        return None, text

    def _classify(self, text: str) -> Route:
        names = list(self.company.departments)
        try:
            answer = self._ask_model(text)
            for token in _WORD.findall(answer.lower()):
                if token in self.company.departments:
                    return Route(self.company.departments[token], text, "classifier")
            log.warning("classifier answered %r, which names no department; using keywords", answer[:80])
        except Exception as exc:  # the model being down must not stop routing
            log.warning("classifier model call failed (%s); using keywords", type(exc).__name__)
        best = self._keywords(text)
        if best is None:
            options = ", ".join(f"`{n}: …`" for n in names)
            raise RoutingError(f"I couldn't tell which department should answer. Start your message with one of {options}.")
        return Route(best, text, "keywords")

    def _ask_model(self, text: str) -> str:
        lines = "\n".join(f"- {d.name}: {d.description}" for d in self.company.departments.values())
        system = (
            f"[{CLASSIFIER_MARKER}] You route employee requests to a department. Departments:\n{lines}\n"
            "Answer with exactly one department name from the list and nothing else."
        )
        model = self.model_factory()
        reply = model.generate(
            [
                ChatMessage(role=MessageRole.SYSTEM, content=[{"type": "text", "text": system}]),
                ChatMessage(role=MessageRole.USER, content=[{"type": "text", "text": text[:2000]}]),
            ],
            max_tokens=10,
        )
        return reply.content if isinstance(reply.content, str) else str(reply.content)

    def _keywords(self, text: str) -> Department | None:
        words = set(_WORD.findall(text.lower()))
        scores: dict[str, float] = {}
        for dept in self.company.departments.values():
            keywords = {k.lower() for k in dept.keywords}
            described = set(_WORD.findall(dept.description.lower())) - _STOPWORDS
            score = 2.0 * sum(1 for k in keywords if k in words or (" " in k and k in text.lower()))
            score += 0.5 * len(words & described)
            scores[dept.name] = score
        best = max(scores, key=scores.get)
        return self.company.departments[best] if scores[best] > 0 else None


_STOPWORDS = {"and", "or", "the", "a", "an", "of", "for", "to", "in", "on", "with", "by", "our", "your", "data"}


def access_refusal(route: Route, request: ChatRequest) -> str | None:
    """None when the department's access policy lets this person ask it here; else the polite refusal."""
    department = route.department.name
    if route.department.access.allows(request):
        return None
    audit.info(json.dumps({"event": "refused", "department": department, "user": request.caller.hashed_user,
                           "platform": request.platform, "channel": request.channel}))
    return (f"Sorry, the {department.upper()} agent isn't available to you here. "
            "If you think you should have access, ask the people who run this bot.")
