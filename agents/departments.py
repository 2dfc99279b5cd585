"""The departments file: which department agents exist, their tools, limits, channels and who may use them.

The file is TOML (see DESIGN.md, "Departments file"). It is validated completely on load, so an operator
learns about a typo or a tool that does not import when the bot starts, not when a user first asks; every
error names the file, the department and the key. Tools are named by import path ("module:attr"), so a
company adds its own tools from its own package without forking agentdesk.
"""
from __future__ import annotations

import contextvars
import copy
import dataclasses
import difflib
import importlib
import inspect
import json
import os
import re
import tomllib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from smolagents import Tool, tool as make_tool

from agents.approvals import ToolPolicy, parse_policies
from agents.chat import Caller, ChatRequest
from agents.egress import EgressPolicy, bind_policy
from agents.tools import SourceCollector, bind_caller, bind_output_dir, bind_sources, bind_state_dir

#: The example company shipped with agentdesk (Northwind Labs); tools default to its data.
BUNDLED_COMPANY_DIR = Path(__file__).parent / "company"

DEFAULT_FILE_TYPES = (
    "csv", "tsv", "xlsx", "json", "txt", "md", "pdf", "png", "jpg", "jpeg", "gif", "webp",
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_IMPORT_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\.\*)?$")
_TOOL_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_EXT_RE = re.compile(r"^[a-z0-9]{1,10}$")


class ConfigError(ValueError):
    """The departments file is wrong; the message names the file, the department and the key.

    `errors` holds every problem found (one per line of the message), so an operator fixes them in one go.
    """

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


# -- data folder of the department whose tool is running ------------------------------------------------

_data_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("agentdesk_data_dir", default=None)


def current_data_dir() -> Path | None:
    """The `data_dir` of the department whose tool is running (bound by Department.load_tools), or None."""
    return _data_dir.get()


@contextmanager
def bind_data_dir(path: Path | None) -> Iterator[None]:
    token = _data_dir.set(path)
    try:
        yield
    finally:
        _data_dir.reset(token)


def resolve_data_dir(default_subdir: str, env_var: str) -> Path:
    """Where a tool module finds its data files.

    In order: the environment variable `env_var` (an operator's override), the running department's
    `data_dir` from the departments file, then the bundled example company's `default_subdir`.
    """
    override = os.environ.get(env_var)
    if override:
        return Path(override).expanduser()
    return current_data_dir() or BUNDLED_COMPANY_DIR / default_subdir


def _bound(tool: Tool, data_dir: Path | None, caller: Caller | None, egress: EgressPolicy | None = None,
           sources: SourceCollector | None = None, output_dir: Path | None = None,
           state_dir: Path | None = None) -> Tool:
    """A copy of `tool` whose forward() runs with the department's data folder, the caller, the company's
    egress policy, the task's source collector and (for write tools) the task's output folder and the
    bot's data folder bound.

    Binding inside forward() holds whichever thread the executor calls the tool from (smolagents' local
    executor runs code in a worker thread, where context variables set by the runner are not visible).
    Tools are module-level singletons shared by every department; the copy keeps one department's folder
    or one request's caller from leaking into another's.
    """
    bound = copy.copy(tool)
    original = tool.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with bind_data_dir(data_dir), (bind_caller(caller) if caller is not None else nullcontext()), \
                bind_policy(egress), bind_sources(sources), \
                (bind_output_dir(output_dir) if output_dir is not None else nullcontext()), \
                (bind_state_dir(state_dir) if state_dir is not None else nullcontext()):
            return original(*args, **kwargs)

    bound.forward = forward  # type: ignore[method-assign]
    return bound


# -- access policy ----------------------------------------------------------------------------------------


def _norm_channel(value: str) -> str:
    return value.strip().lstrip("#").lower()


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use a department. Open to everyone unless `restricted`; then default deny.

    A restricted department allows a request that matches any list for its platform. Users may be listed
    by platform id or by email. The terminal (a person at the server itself) is always allowed.
    """

    restricted: bool = False
    slack_channels: tuple[str, ...] = ()
    slack_users: tuple[str, ...] = ()
    slack_usergroups: tuple[str, ...] = ()
    teams_tenants: tuple[str, ...] = ()
    teams_teams: tuple[str, ...] = ()
    teams_channels: tuple[str, ...] = ()
    teams_users: tuple[str, ...] = ()
    teams_groups: tuple[str, ...] = ()

    def allows(self, request: ChatRequest) -> bool:
        if not self.restricted or request.platform == "terminal":
            return True
        if request.platform == "slack":
            channels = {_norm_channel(c) for c in self.slack_channels}
            return (
                _norm_channel(request.channel) in channels
                or (request.channel_name is not None and _norm_channel(request.channel_name) in channels)
                or _user_listed(request, self.slack_users)
                or any(g in self.slack_usergroups for g in request.user_groups)
            )
        if request.platform == "teams":
            # A channel message's conversation id carries ";messageid=..."; the channel is what precedes it.
            channel = request.channel.split(";", 1)[0]
            return (
                request.workspace in self.teams_tenants
                or (request.team is not None and request.team in self.teams_teams)
                or channel in self.teams_channels
                or _user_listed(request, self.teams_users)
                or any(g in self.teams_groups for g in request.user_groups)
            )
        return False


def _user_listed(request: ChatRequest, users: tuple[str, ...]) -> bool:
    if request.user in users:
        return True
    email = (request.user_email or "").lower()
    return bool(email) and email in {u.lower() for u in users if "@" in u}


# -- department and company -------------------------------------------------------------------------------

AGENT_KINDS = ("code", "tool_calling")
CODE_TAGS = ("markdown", "xml")


@dataclass(frozen=True)
class SubAgent:
    """A managed sub-agent (`[agents.<name>]`): a department's agent delegates a task to it like to a tool."""

    name: str
    description: str
    kind: str = "tool_calling"
    tools: tuple[str, ...] = ()
    max_steps: int = 5
    instructions: str = ""
    authorized_imports: tuple[str, ...] = ()
    step_timeout_s: float = 30.0
    code_block_tags: str | None = None


@dataclass(frozen=True)
class SensitivityLabel:
    """How confidential a department's answers are, e.g. "Confidential · HR only"; Teams shows it on the answer."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Department:
    """One department agent: what it is for, its tools and limits, and where it answers."""

    name: str
    description: str
    tools: tuple[str, ...] = ()
    authorized_imports: tuple[str, ...] = ()
    max_steps: int = 6
    step_timeout_s: float = 30.0
    #: Agent runs of this department at once on one worker (None: only the worker's global limit).
    max_concurrent: int | None = None
    slack_channels: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    instructions: str = ""
    file_types: tuple[str, ...] = DEFAULT_FILE_TYPES
    access: AccessPolicy = field(default_factory=AccessPolicy)
    data_dir: Path | None = None
    agent: str = "code"
    managed_agents: tuple[str, ...] = ()
    code_block_tags: str | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    #: Example questions Slack offers when a person opens the agent's Messages tab.
    suggested_prompts: tuple[str, ...] = ()
    #: Shown on every answer of this department in Teams (a Microsoft Purview-style label, as text).
    sensitivity_label: SensitivityLabel | None = None
    #: Tools (by import path) that need a person's approval before they run.
    tool_policy: dict[str, ToolPolicy] = field(default_factory=dict)

    def load_tools(self, caller: Caller | None = None, sources: SourceCollector | None = None,
                   paths: tuple[str, ...] | None = None, output_dir: Path | None = None,
                   state_dir: Path | None = None) -> list[Tool]:
        """Import every tool named in the file, as smolagents Tools ready to hand to a CodeAgent.

        An attribute may be a Tool instance (e.g. made with @tool), a Tool subclass (instantiated here) or
        a plain function with type hints and a docstring with an Args section (wrapped with smolagents.tool).
        Each returned tool runs with this department's `data_dir` and the company's egress policy bound and,
        when given, the caller (agents.tools.current_caller()) and the task's source collector, whatever
        thread calls it. `paths` loads another tool list (a sub-agent's) with the same bindings. `output_dir`
        is where a tool writes files for the person (agents.tools.current_output_dir()); `state_dir` is the
        bot's data folder (agents.tools.current_state_dir()). Same order as the paths.
        """
        loaded = [_load_tool(self.name, path) for path in (self.tools if paths is None else paths)]
        return [_bound(t, self.data_dir, caller, self.egress, sources, output_dir, state_dir) for t in loaded]

    def accepts_file(self, filename: str) -> bool:
        """Whether an upload with this name is a type this department takes."""
        suffix = Path(filename).suffix.lower().lstrip(".")
        return bool(suffix) and suffix in self.file_types


@dataclass(frozen=True)
class Company:
    name: str
    departments: dict[str, Department]
    source: Path
    agents: dict[str, SubAgent] = field(default_factory=dict)
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    def department_for_channel(self, channel_id: str | None, channel_name: str | None = None) -> Department | None:
        """The department a channel is mapped to (by id or name, with or without '#'), if any."""
        wanted = {_norm_channel(v) for v in (channel_id, channel_name) if v}
        for department in self.departments.values():
            if wanted & {_norm_channel(c) for c in department.slack_channels}:
                return department
        return None


def _load_tool(department: str, path: str) -> Tool:
    where = f"[departments.{department}] tool {path!r}"
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a config problem to report
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}") from exc
    try:
        if isinstance(obj, Tool):
            return obj
        if inspect.isclass(obj) and issubclass(obj, Tool):
            return obj()
        if inspect.isfunction(obj):
            return make_tool(obj)
    except Exception as exc:  # noqa: BLE001 - smolagents validation errors say what is missing
        raise ConfigError(f"{where}: not a usable tool: {exc}") from exc
    raise ConfigError(
        f"{where}: is a {type(obj).__name__}, expected a smolagents Tool, a Tool subclass or a typed function"
    )


# -- loading and validation -------------------------------------------------------------------------------

_TOP_KEYS = {"company", "departments", "agents", "egress"}
_COMPANY_KEYS = {"name"}
_DEPARTMENT_KEYS = {
    "description", "tools", "authorized_imports", "max_steps", "step_timeout_s", "max_concurrent", "slack_channels",
    "keywords", "instructions", "file_types", "access", "data_dir", "agent", "managed_agents", "code_block_tags",
    "suggested_prompts", "sensitivity_label", "tool_policy",
}
_AGENT_KEYS = {
    "kind", "description", "tools", "max_steps", "instructions", "authorized_imports", "step_timeout_s",
    "code_block_tags",
}
_EGRESS_KEYS = {"allow_domains", "deny_domains", "allow_private"}
PROMPT_LIMIT = 200  # characters per suggested prompt (Slack shows them as buttons)
_LABEL_KEYS = {"name", "description"}
LABEL_NAME_MAX = 80
_ACCESS_LISTS = (
    "slack_channels", "slack_users", "slack_usergroups", "teams_tenants", "teams_teams", "teams_channels",
    "teams_users", "teams_groups",
)
_ACCESS_KEYS = {"restricted", *_ACCESS_LISTS}


def _show(value: Any) -> str:
    """A value as it reads in TOML, for error messages (`"six"`, `true`, `[1, 2]`)."""
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _unknown_keys(table: dict, allowed: set[str], where: str) -> list[str]:
    errors = []
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            suggestion = f' (did you mean "{hint[0]}"?)' if hint else f"; allowed keys: {', '.join(sorted(allowed))}"
            errors.append(f'{where} unknown key "{key}"{suggestion}')
    return errors


class _Checker:
    """Collects every problem of one department table, each prefixed with the file and the table."""

    def __init__(self, prefix: str, table: dict):
        self.prefix = prefix
        self.table = table
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{self.prefix} {key} {message}")

    def string(self, key: str, default: str | None = None, required: bool = False) -> str:
        if key not in self.table:
            if required:
                self.fail(key, "is required (a short sentence saying what the department handles)")
            return default or ""
        value = self.table[key]
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(key, f"must be a {'non-empty ' if required else ''}string, got {_show(value)}")
            return default or ""
        return value.strip()

    def strings(
        self, key: str, default: tuple[str, ...] = (), pattern: re.Pattern | None = None, what: str = "",
        transform: Callable[[str], str] = str.strip,
    ) -> tuple[str, ...]:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"must be a list of strings, got {_show(value)}")
            return default
        out = []
        for item in value:
            item = transform(item)
            if not item:
                self.fail(key, "must not contain empty strings")
            elif pattern is not None and not pattern.match(item):
                self.fail(key, f"has {_show(item)}, which is not {what}")
            else:
                out.append(item)
        return tuple(dict.fromkeys(out))

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> str | None:
        if key not in self.table:
            return default
        value = self.table[key]
        if value not in choices:
            self.fail(key, f"must be one of {', '.join(_show(c) for c in choices)}, got {_show(value)}")
            return default
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(key, f"must be a positive integer, got {_show(value)}")
            return default
        return value

    def positive_number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(key, f"must be a positive number of seconds, got {_show(value)}")
            return default
        return float(value)


def _access(prefix: str, raw: Any) -> tuple[AccessPolicy, list[str]]:
    where = f"{prefix[:-1]}.access]"
    if raw is None:
        return AccessPolicy(), []
    if not isinstance(raw, dict):
        return AccessPolicy(), [f"{prefix} access must be a table ([departments.<name>.access]), got {_show(raw)}"]
    errors = _unknown_keys(raw, _ACCESS_KEYS, where)
    check = _Checker(where, raw)
    restricted = raw.get("restricted", False)
    if not isinstance(restricted, bool):
        check.fail("restricted", f"must be true or false, got {_show(restricted)}")
        restricted = False
    lists = {key: check.strings(key) for key in _ACCESS_LISTS}
    if not restricted and any(lists.values()):
        check.fail(
            "restricted",
            "is false, so the lists of who may use this department would be ignored; "
            "set restricted = true to enforce them (or remove the lists)",
        )
    return AccessPolicy(restricted=restricted, **lists), errors + check.errors


def _sensitivity_label(prefix: str, raw: Any) -> tuple[SensitivityLabel | None, list[str]]:
    if raw is None:
        return None, []
    where = f"{prefix[:-1]}.sensitivity_label]"
    if not isinstance(raw, dict):
        return None, [f'{prefix} sensitivity_label must be a table like {{ name = "Confidential", description = '
                      f'"HR data: do not forward" }}, got {_show(raw)}']
    check = _Checker(where, raw)
    name = check.string("name")
    if not name:
        check.fail("name", "is required (the label's title, e.g. \"Confidential\")")
    elif len(name) > LABEL_NAME_MAX:
        check.fail("name", f"must be at most {LABEL_NAME_MAX} characters, got {len(name)}")
    description = check.string("description")
    errors = _unknown_keys(raw, _LABEL_KEYS, where) + check.errors
    return (None, errors) if errors else (SensitivityLabel(name, description), [])


def _department(name: str, raw: Any, file: Path, sub_agents: Any = ()) -> tuple[Department | None, list[str]]:
    prefix = f"{file}: [departments.{name}]"
    if not _NAME_RE.match(name):
        return None, [
            f"{prefix} department names must be lowercase identifiers (letters, digits, underscore; "
            f"starting with a letter, at most 32 characters) because users type them as a prefix like "
            f'"hr:"; got "{name}"'
        ]
    if not isinstance(raw, dict):
        return None, [f"{prefix} must be a table of settings, got {_show(raw)}"]
    errors = _unknown_keys(raw, _DEPARTMENT_KEYS, prefix)
    check = _Checker(prefix, raw)
    description = check.string("description", required=True)
    tools = check.strings("tools", pattern=_TOOL_PATH_RE, what='an import path like "package.module:tool_name"')
    imports = check.strings(
        "authorized_imports", pattern=_IMPORT_RE, what='a module name like "pandas" or "matplotlib.pyplot"'
    )
    max_steps = check.positive_int("max_steps", 6)
    step_timeout_s = check.positive_number("step_timeout_s", 30.0)
    max_concurrent = check.positive_int("max_concurrent", 0) if "max_concurrent" in raw else None
    channels = check.strings("slack_channels", transform=lambda s: s.strip().lstrip("#"))
    keywords = check.strings("keywords", transform=lambda s: s.strip().lower())
    instructions = check.string("instructions")
    file_types = check.strings(
        "file_types", default=DEFAULT_FILE_TYPES, pattern=_EXT_RE, what='a file extension like "csv"',
        transform=lambda s: s.strip().lstrip(".").lower(),
    )
    prompts = check.strings("suggested_prompts")
    for prompt in prompts:
        if len(prompt) > PROMPT_LIMIT:
            check.fail("suggested_prompts", f"has a prompt of {len(prompt)} characters; keep each under {PROMPT_LIMIT}")
    data_dir = None
    if "data_dir" in raw:
        raw_dir = check.string("data_dir")
        if raw_dir:
            data_dir = (file.parent / raw_dir).resolve()
            if not data_dir.is_dir():
                check.fail("data_dir", f"is {_show(raw_dir)}, but {data_dir} is not a folder")
    agent = check.choice("agent", AGENT_KINDS, "code")
    managed = check.strings("managed_agents", pattern=_NAME_RE, what="a sub-agent name from an [agents.<name>] table")
    code_tags = check.choice("code_block_tags", CODE_TAGS, None)
    for managed_name in managed:
        if managed_name not in sub_agents:
            hint = difflib.get_close_matches(managed_name, sorted(sub_agents), n=1)
            check.fail("managed_agents", f"names {_show(managed_name)}, but there is no [agents.{managed_name}] table"
                       + (f' (did you mean "{hint[0]}"?)' if hint else ""))
    access, access_errors = _access(prefix, raw.get("access"))
    label, label_errors = _sensitivity_label(prefix, raw.get("sensitivity_label"))
    policies, policy_errors = parse_policies(prefix, name, raw.get("tool_policy"), tools)
    errors += check.errors + access_errors + label_errors + policy_errors
    if errors:
        return None, errors
    department = Department(
        name=name,
        description=description,
        tools=tools,
        authorized_imports=imports,
        max_steps=max_steps,
        step_timeout_s=step_timeout_s,
        max_concurrent=max_concurrent,
        slack_channels=channels,
        keywords=keywords,
        instructions=instructions,
        file_types=file_types,
        access=access,
        data_dir=data_dir,
        agent=agent or "code",
        managed_agents=managed,
        code_block_tags=code_tags,
        suggested_prompts=prompts,
        sensitivity_label=label,
        tool_policy=policies,
    )
    try:
        loaded = department.load_tools()
    except ConfigError as exc:
        return None, [f"{file}: {exc}"]
    seen: dict[str, str] = {}
    for path, loaded_tool in zip(tools, loaded):
        if loaded_tool.name in seen:
            errors.append(
                f'{prefix} tools {_show(path)} and {_show(seen[loaded_tool.name])} are both named '
                f'"{loaded_tool.name}"; the agent can call only one of them'
            )
        seen[loaded_tool.name] = path
    return (None, errors) if errors else (department, [])


def _sub_agent(name: str, raw: Any, file: Path) -> tuple[SubAgent | None, list[str]]:
    prefix = f"{file}: [agents.{name}]"
    if not _NAME_RE.match(name):
        return None, [f"{prefix} sub-agent names must be lowercase identifiers (the calling agent uses it as a "
                      f'function name); got "{name}"']
    if not isinstance(raw, dict):
        return None, [f"{prefix} must be a table of settings, got {_show(raw)}"]
    errors = _unknown_keys(raw, _AGENT_KEYS, prefix)
    check = _Checker(prefix, raw)
    agent = SubAgent(
        name=name,
        description=check.string("description", required=True),
        kind=check.choice("kind", AGENT_KINDS, "tool_calling") or "tool_calling",
        tools=check.strings("tools", pattern=_TOOL_PATH_RE, what='an import path like "package.module:tool_name"'),
        max_steps=check.positive_int("max_steps", 5),
        instructions=check.string("instructions"),
        authorized_imports=check.strings("authorized_imports", pattern=_IMPORT_RE, what='a module name like "json"'),
        step_timeout_s=check.positive_number("step_timeout_s", 30.0),
        code_block_tags=check.choice("code_block_tags", CODE_TAGS, None),
    )
    errors += check.errors
    for path in agent.tools:
        try:
            _load_tool(f"agents.{name}", path)
        except ConfigError as exc:
            errors.append(f"{file}: {exc}".replace("[departments.agents.", "[agents."))
    return (None, errors) if errors else (agent, [])


def _egress(raw: Any, file: Path) -> tuple[EgressPolicy, list[str]]:
    prefix = f"{file}: [egress]"
    if raw is None:
        return EgressPolicy(), []
    if not isinstance(raw, dict):
        return EgressPolicy(), [f"{prefix} must be a table, got {_show(raw)}"]
    errors = _unknown_keys(raw, _EGRESS_KEYS, prefix)
    check = _Checker(prefix, raw)
    lower = lambda s: s.strip().lower()  # noqa: E731
    policy = EgressPolicy(
        allow_domains=check.strings("allow_domains", default=("*",), transform=lower),
        deny_domains=check.strings("deny_domains", transform=lower),
        allow_private=check.strings("allow_private", transform=lower),
    )
    return policy, errors + check.errors


def load_company(path: Path | str) -> Company:
    """Read and validate a departments file; raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (AGENTDESK_CONFIG names the departments file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the departments file: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc

    errors = _unknown_keys(data, _TOP_KEYS, f"{path}:")
    company_name = "agentdesk"
    raw_company = data.get("company", {})
    if not isinstance(raw_company, dict):
        errors.append(f"{path}: company must be a table ([company] name = \"...\"), got {_show(raw_company)}")
    else:
        errors += _unknown_keys(raw_company, _COMPANY_KEYS, f"{path}: [company]")
        name = raw_company.get("name", company_name)
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{path}: [company] name must be a non-empty string, got {_show(name)}")
        else:
            company_name = name.strip()

    raw_departments = data.get("departments")
    if raw_departments is None or raw_departments == {}:
        errors.append(f"{path}: no departments defined; add at least one [departments.<name>] table")
        raise ConfigError(errors)
    if not isinstance(raw_departments, dict):
        errors.append(f"{path}: departments must be tables like [departments.hr], got {_show(raw_departments)}")
        raise ConfigError(errors)

    egress, egress_errors = _egress(data.get("egress"), path)
    errors += egress_errors
    sub_agents: dict[str, SubAgent] = {}
    raw_agents = data.get("agents", {})
    if not isinstance(raw_agents, dict):
        errors.append(f"{path}: agents must be tables like [agents.web_research], got {_show(raw_agents)}")
        raw_agents = {}
    for name, raw in raw_agents.items():
        sub_agent, agent_errors = _sub_agent(name, raw, path)
        errors += agent_errors
        if sub_agent is not None:
            sub_agents[name] = sub_agent

    departments: dict[str, Department] = {}
    for name, raw in raw_departments.items():
        department, department_errors = _department(name, raw, path, raw_agents)
        errors += department_errors
        if department is not None:
            departments[name] = dataclasses.replace(department, egress=egress)
            clashes = set(department.managed_agents) & {t.name for t in department.load_tools()}
            for clash in sorted(clashes):
                errors.append(f'{path}: [departments.{name}] managed_agents has "{clash}", which is also the name of '
                              "one of its tools; the agent can call only one of them")

    owner: dict[str, str] = {}
    for department in departments.values():
        for channel in department.slack_channels:
            key = _norm_channel(channel)
            if key in owner:
                errors.append(
                    f"{path}: [departments.{department.name}] slack_channels has {_show(channel)}, which is "
                    f"already mapped to [departments.{owner[key]}]; a channel routes to one department"
                )
            owner.setdefault(key, department.name)

    if errors:
        raise ConfigError(errors)
    return Company(name=company_name, departments=departments, source=path.resolve(), agents=sub_agents,
                   egress=egress)
