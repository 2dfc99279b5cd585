"""Slack's agent messaging experience (agent_view): suggested prompts, the person's viewing context, and
user-group membership for access rules.

`app_home_opened` (tab `messages`) replaces `assistant_thread_started`: the prompts come from each
department's `suggested_prompts`. `app_context_changed` (no Bolt listener exists; the raw event is routed
by type) says what the person is looking at; it is kept in the state store for their next request, and
only references (channel, thread) are kept, never content.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Iterable

from slack_sdk.web.async_client import AsyncWebClient

from agents.departments import Company
from bots.slack.replier import _error_name

if TYPE_CHECKING:
    from agents.memory import StateStore

log = logging.getLogger("agentdesk.slack.agent_view")

MAX_PROMPTS = 4  # Slack shows at most four
CONTEXT = "slack_context"  # state-store namespace, key "{team}:{user}"
CONTEXT_TTL_S = 24 * 3600
USERGROUP_TTL_S = 300.0
ENTITY_TYPES = {"slack#/types/channel_id": "channel", "slack#/types/thread_ts": "thread_ts",
                "slack#/types/message_context": "message", "slack#/types/canvas_id": "canvas",
                "slack#/types/list_id": "list"}


def suggested_prompts(company: Company) -> list[dict[str, str]]:
    """Up to four prompts, taken in turn from each department; the message carries the department prefix."""
    queues = [[(name, p) for p in d.suggested_prompts] for name, d in company.departments.items()]
    prompts: list[dict[str, str]] = []
    while len(prompts) < MAX_PROMPTS and any(queues):
        for queue in queues:
            if queue and len(prompts) < MAX_PROMPTS:
                name, prompt = queue.pop(0)
                title = prompt if len(prompt) <= 75 else prompt[:74] + "…"
                prompts.append({"title": title, "message": f"{name}: {prompt}"})
    return prompts


def context_entities(event: dict) -> list[dict[str, str]]:
    """The references in an app_context_changed event, most relevant first (ids and timestamps only)."""
    out = []
    for entity in ((event.get("context") or {}).get("entities") or [])[:5]:
        kind = ENTITY_TYPES.get(str(entity.get("type")))
        value = entity.get("value")
        if kind == "message" and isinstance(value, dict):
            out.append({"kind": kind, "channel": str(value.get("channel_id") or ""),
                        "ts": str(value.get("message_ts") or "")})
        elif kind and isinstance(value, str):
            out.append({"kind": kind, "value": value})
    return out


async def remember_context(store: "StateStore", team: str, event: dict, user: str | None) -> None:
    """Keep (or clear) what `user` is viewing, for their next request only."""
    if not user:
        return
    key = f"{team}:{user}"
    entities = context_entities(event)
    if entities:
        await store.put_record(CONTEXT, key, {"entities": entities, "at": time.time()}, CONTEXT_TTL_S)
    else:
        await store.delete_record(CONTEXT, key)


async def take_context(store: "StateStore", team: str, user: str) -> tuple[dict[str, str], ...]:
    """What `user` had open, for this request only (the record is consumed)."""
    key = f"{team}:{user}"
    record = await store.get_record(CONTEXT, key)
    if not record:
        return ()
    await store.delete_record(CONTEXT, key)
    return tuple(dict(e) for e in record.get("entities") or [])


class UserGroups:
    """Which Slack user groups (S...) a person belongs to (usergroups.users.list), for access rules and approvers.

    By default only the departments file's `slack_usergroups` are looked up, each cached for USERGROUP_TTL_S;
    an approval asks about its own approvers, fresh. Without the usergroups:read scope the lookup fails, is
    logged once, and group rules match nobody (default deny).
    """

    def __init__(self, client: AsyncWebClient, company: Company, ttl_s: float = USERGROUP_TTL_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.groups = sorted({g for d in company.departments.values() for g in d.access.slack_usergroups})
        self._members: dict[tuple[str, str], tuple[frozenset[str], float]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._warned = False

    async def groups_of(self, user: str, team: str, among: Iterable[str] | None = None, *,
                        fresh: bool = False) -> tuple[str, ...]:
        """The groups of `among` (default: the access rules' groups) that `user` is in; `fresh` skips the cache,
        so someone just removed from an approvers group cannot approve on a cached membership."""
        groups = self.groups if among is None else sorted({g for g in among if g.startswith("S")})
        if not groups:
            return ()
        found = await asyncio.gather(*(self._members_of(g, team, fresh) for g in groups))
        return tuple(g for g, members in zip(groups, found) if user in members)

    async def _members_of(self, group: str, team: str, fresh: bool) -> frozenset[str]:
        key = (team, group)
        cached = self._members.get(key)
        if not fresh and cached and cached[1] > time.monotonic():
            return cached[0]
        async with self._locks.setdefault(key, asyncio.Lock()):  # one lookup per group, however many ask
            cached = self._members.get(key)
            if not fresh and cached and cached[1] > time.monotonic():
                return cached[0]
            members: frozenset[str] = frozenset()
            try:
                response = await self.client.usergroups_users_list(usergroup=group, team_id=team or None)
                members = frozenset(response.get("users") or [])
            except Exception as exc:  # noqa: BLE001 - deny by default, tell the operator once
                if not self._warned:
                    self._warned = True
                    log.warning("usergroups.users.list failed (%s): slack_usergroups rules and approver groups "
                                "match nobody; add the usergroups:read scope and reinstall the app", _error_name(exc))
                if fresh:  # one failed press must not empty the access rules' cached membership
                    return members
            self._members[key] = (members, time.monotonic() + self.ttl_s)
            return members
