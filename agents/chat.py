"""Platform-neutral request and reply types.

A platform adapter (bots/slack, bots/teams, the terminal) turns its input into a ChatRequest and hands
the runner a ThreadReplier; nothing in agents/ knows which chat platform asked.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Attachment:
    """A file shared with a request, fetched by the runner into the task workspace.

    Either `path` (a local file, for the terminal) or `url` (fetched over HTTP with `headers`, which may
    carry the bot's token and therefore never appear in logs or spans).
    """

    name: str
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    path: Path | None = None
    mimetype: str | None = None
    size: int | None = None
    #: Error message to show instead of downloading (e.g. "Teams does not deliver files in channels").
    unavailable: str | None = None


@dataclass(frozen=True)
class Caller:
    """Who asked, bound on the host from the chat platform; tools read it, the model never supplies it."""

    platform: str
    workspace: str
    user: str
    user_name: str | None = None
    email: str | None = None
    #: What the person had open when they asked (Slack's app_context_changed): references only, e.g.
    #: ({"kind": "channel", "value": "C123"},); a host-side tool reads them after checking access.
    viewing: tuple[Mapping[str, str], ...] = ()

    @property
    def hashed_user(self) -> str:
        return hashlib.sha256(f"{self.platform}:{self.workspace}:{self.user}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ChatRequest:
    """One message to the bot, from any platform."""

    platform: str  # "slack" | "teams" | "terminal" | ...
    workspace: str  # Slack team id / Teams tenant id
    channel: str  # Slack channel id / Teams conversation id
    thread: str  # Slack thread_ts (or ts) / Teams conversation id incl. ;messageid=
    user: str  # platform user id
    text: str
    attachments: tuple[Attachment, ...] = ()
    message_id: str = ""  # Slack ts / Teams activity id
    user_name: str | None = None
    user_email: str | None = None
    channel_name: str | None = None  # for the departments file's channel map
    is_direct: bool = False  # DM / personal chat
    user_groups: tuple[str, ...] = ()  # Slack user groups / Teams AAD groups, for access policy
    team: str | None = None  # Teams team id
    trace_carrier: Mapping[str, str] = field(default_factory=dict)
    #: What the adapter needs to post into this thread later (e.g. a Teams conversation reference), kept
    #: in the durable task record so a restarted bot can tell the person their request was interrupted.
    reply_address: Mapping[str, str] = field(default_factory=dict)
    #: See Caller.viewing; set by the adapter for the request that follows a context change.
    viewing: tuple[Mapping[str, str], ...] = ()

    @property
    def thread_key(self) -> str:
        """Stable key of a conversation thread: memory and department stick to it."""
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"

    @property
    def caller(self) -> Caller:
        return Caller(self.platform, self.workspace, self.user, self.user_name, self.user_email, self.viewing)


@dataclass(frozen=True)
class Source:
    """Where a statement came from (an HR policy, a web page): Slack task-card sources, Teams citations."""

    title: str
    url: str = ""
    abstract: str = ""


@dataclass(frozen=True)
class StepUpdate:
    """One agent step, already excerpted and redacted for display."""

    department: str
    step_number: int
    title: str
    code: str | None = None
    observation: str | None = None
    error: str | None = None
    duration_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    is_final: bool = False
    #: Sub-agent path for nested steps, e.g. ("web_research",): "Marketing › web_research · step 2".
    agent_path: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()

    @property
    def where(self) -> str:
        """Who took the step, for display: "marketing" or "marketing › web_research"."""
        return " › ".join((self.department, *self.agent_path))


@dataclass(frozen=True)
class OutputFile:
    """A file the agent left in OUTPUT_DIR, copied out of the sandbox (never a symlink)."""

    name: str
    path: Path
    size: int
    mimetype: str


@dataclass(frozen=True)
class ApprovalPrompt:
    """A gated tool call waiting for a person's yes or no, as the thread shows it (arguments already made
    safe for display: redacted, truncated; each platform still escapes them for its own markup)."""

    approval_id: str
    department: str
    tool: str
    arguments: tuple[tuple[str, str], ...]
    requester: str  # platform user id of the person who asked
    requester_name: str | None
    approval: str  # "requester" | "approvers"
    approvers: tuple[str, ...]
    expires_at: float  # epoch seconds


@dataclass(frozen=True)
class ApprovalDecision:
    """How an approval ended: approved, denied, timeout, expired (a restart) or cancelled (the run ended)."""

    status: str
    by: str | None = None  # platform user id of the person who decided
    by_name: str | None = None
    at: float = 0.0

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True)
class FinalAnswer:
    department: str
    text: str
    files: tuple[OutputFile, ...] = ()
    notices: tuple[str, ...] = ()  # e.g. "files skipped: too large", "SANDBOX=local warning"
    trace_id: str | None = None
    trace_url: str | None = None
    steps: int = 0
    duration_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    #: The task record this answer belongs to: feedback and stop controls refer to it.
    task_id: str = ""
    sources: tuple[Source, ...] = ()


class ThreadReplier(ABC):
    """How the runner talks back into the thread the request came from.

    Implementations coalesce to their platform's rate limits and must not raise for transient platform
    errors: they retry, and a final answer is never dropped because of a rate limit.
    """

    @abstractmethod
    async def status(self, text: str) -> None:
        """A short 'working on it' note (Slack assistant status, Teams typing, a terminal line)."""

    @abstractmethod
    async def step(self, update: StepUpdate) -> None:
        """Progress of one agent step."""

    @abstractmethod
    async def final(self, answer: FinalAnswer) -> None:
        """The final answer and every output file, in the same thread."""

    @abstractmethod
    async def error(self, message: str) -> None:
        """A clear, user-facing message when the request cannot be answered (limits, refusals, failures)."""

    async def approval(self, prompt: ApprovalPrompt) -> dict | None:
        """Ask the thread to approve a tool call (buttons); returns what approval_decided needs to update the
        message (e.g. its id), or None when this thread cannot ask, so the tool is refused, never run unasked."""
        return None

    async def approval_decided(self, prompt: ApprovalPrompt, decision: ApprovalDecision, handle: dict) -> None:
        """Show the decision (who, when) on the approval message posted by approval()."""
        return None
