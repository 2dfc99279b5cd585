"""The departments file: the bundled company loads, every mistake an operator can make is named, and the
access policy lets in exactly who it lists."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from smolagents import Tool

from agents.chat import ChatRequest
from agents.departments import (
    BUNDLED_COMPANY_DIR,
    AccessPolicy,
    ConfigError,
    Department,
    load_company,
)
from agents.settings import BUNDLED_CONFIG

MINIMAL = """
[departments.hr]
description = "Leave and benefits"
"""


def write(tmp_path: Path, text: str, name: str = "departments.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_company(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# -- the bundled example company --------------------------------------------------------------------------


def test_bundled_company_loads_with_three_departments():
    company = load_company(BUNDLED_CONFIG)
    assert company.name == "Northwind Labs"
    assert set(company.departments) == {"hr", "marketing", "sales"}
    assert company.source == BUNDLED_CONFIG.resolve()
    for department in company.departments.values():
        assert department.description
        assert department.keywords
        assert department.instructions
        assert not department.access.restricted


def test_bundled_tools_load_as_smolagents_tools():
    company = load_company(BUNDLED_CONFIG)
    names = {name: sorted(t.name for t in d.load_tools()) for name, d in company.departments.items()}
    assert names == {
        "hr": ["book_leave", "leave_balance", "search_policies", "viewing_context"],
        "marketing": ["campaign_data", "campaign_summary", "viewing_context"],
        "sales": ["compare_products", "create_quote", "find_products", "price_quote", "viewing_context"],
    }
    assert all(isinstance(t, Tool) for d in company.departments.values() for t in d.load_tools())


def test_bundled_marketing_delegates_web_research_and_no_department_fetches_itself():
    company = load_company(BUNDLED_CONFIG)
    assert not any("agents.tools.web" in path for d in company.departments.values() for path in d.tools)
    assert company.departments["marketing"].managed_agents == ("web_research",)
    research = company.agents["web_research"]
    assert research.kind == "tool_calling" and research.max_steps == 5
    assert research.tools == ("agents.tools.web:web_search", "agents.tools.web:visit_webpage")
    assert company.egress.allow_private == () and company.departments["hr"].egress == company.egress


def test_sub_agents_agent_kinds_and_egress_are_validated(tmp_path):
    message = config_error(tmp_path, MINIMAL + textwrap.dedent(
        """
        agent = "python"
        managed_agents = ["web_reserch"]
        code_block_tags = "html"

        [agents.web_research]
        kind = "tool"
        description = "Researches"
        tools = ["agents.tools.web:nope"]
        max_step = 3

        [egress]
        allow_privat = ["10.0.0.0/8"]
        """))
    assert 'agent must be one of "code", "tool_calling", got "python"' in message
    assert 'code_block_tags must be one of "markdown", "xml", got "html"' in message
    assert 'managed_agents names "web_reserch", but there is no [agents.web_reserch] table (did you mean "web_research"?)' in message
    assert '[agents.web_research] kind must be one of "code", "tool_calling", got "tool"' in message
    assert "[agents.web_research] tool 'agents.tools.web:nope': module 'agents.tools.web' has no attribute 'nope'" in message
    assert '[agents.web_research] unknown key "max_step" (did you mean "max_steps"?)' in message
    assert '[egress] unknown key "allow_privat" (did you mean "allow_private"?)' in message


def test_bundled_marketing_can_chart_a_csv():
    marketing = load_company(BUNDLED_CONFIG).departments["marketing"]
    assert {"pandas", "matplotlib", "matplotlib.pyplot"} <= set(marketing.authorized_imports)
    assert marketing.accepts_file("q3-campaigns.CSV")
    assert not marketing.accepts_file("payload.exe")


def test_bundled_data_dirs_resolve_next_to_the_file():
    company = load_company(BUNDLED_CONFIG)
    assert company.departments["hr"].data_dir == (BUNDLED_COMPANY_DIR / "hr").resolve()
    assert company.departments["sales"].data_dir == (BUNDLED_COMPANY_DIR / "sales").resolve()


def test_channels_route_to_their_department_by_name_or_id(tmp_path):
    company = load_company(BUNDLED_CONFIG)
    assert company.department_for_channel("C0HRHELP1", "hr-help").name == "hr"
    assert company.department_for_channel("C0SALES01", "#Sales").name == "sales"
    assert company.department_for_channel("C0RANDOM1", "random") is None
    assert company.department_for_channel("C0RANDOM1", None) is None

    by_id = load_company(write(tmp_path, MINIMAL + 'slack_channels = ["C0123ABCD"]\n'))
    assert by_id.department_for_channel("C0123ABCD", "whatever").name == "hr"


def test_minimal_department_gets_defaults(tmp_path):
    company = load_company(write(tmp_path, MINIMAL))
    hr = company.departments["hr"]
    assert company.name == "agentdesk"
    assert (hr.max_steps, hr.step_timeout_s, hr.tools, hr.data_dir) == (6, 30.0, (), None)
    assert "csv" in hr.file_types and "pdf" in hr.file_types
    assert hr.access == AccessPolicy()


# -- validation: every message names the file, the department and the key ----------------------------------


def test_max_steps_not_a_number(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'max_steps = "six"\n')
    assert '[departments.hr] max_steps must be a positive integer, got "six"' in message


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "true"])
def test_max_steps_must_be_positive_integer(tmp_path, value):
    message = config_error(tmp_path, MINIMAL + f"max_steps = {value}\n")
    assert f"[departments.hr] max_steps must be a positive integer, got {value}" in message


@pytest.mark.parametrize("value", ["0", '"two"', "1.5"])
def test_max_concurrent_must_be_a_positive_integer(tmp_path, value):
    message = config_error(tmp_path, MINIMAL + f"max_concurrent = {value}\n")
    assert f"[departments.hr] max_concurrent must be a positive integer, got {value}" in message


def test_max_concurrent_is_read_and_optional(tmp_path):
    company = load_company(write(tmp_path, MINIMAL + "max_concurrent = 3\n"))
    assert company.departments["hr"].max_concurrent == 3
    assert load_company(write(tmp_path, MINIMAL, "other.toml")).departments["hr"].max_concurrent is None


def test_sensitivity_label_is_read_and_checked(tmp_path):
    company = load_company(write(tmp_path, MINIMAL + 'sensitivity_label = { name = "Confidential", '
                                                     'description = "HR only" }\n'))
    label = company.departments["hr"].sensitivity_label
    assert (label.name, label.description) == ("Confidential", "HR only")
    assert "[departments.hr] sensitivity_label must be a table" in config_error(
        tmp_path, MINIMAL + 'sensitivity_label = "Confidential"\n')
    message = config_error(tmp_path, MINIMAL + 'sensitivity_label = { description = "x", colour = "red" }\n')
    assert "[departments.hr.sensitivity_label] name is required" in message
    assert '[departments.hr.sensitivity_label] unknown key "colour"' in message
    assert "name must be at most 80 characters" in config_error(
        tmp_path, MINIMAL + f'sensitivity_label = {{ name = "{"x" * 81}" }}\n')


def test_step_timeout_must_be_positive(tmp_path):
    message = config_error(tmp_path, MINIMAL + "step_timeout_s = 0\n")
    assert "[departments.hr] step_timeout_s must be a positive number of seconds, got 0" in message


def test_description_is_required(tmp_path):
    message = config_error(tmp_path, '[departments.sales]\nmax_steps = 4\n')
    assert "[departments.sales] description is required" in message


def test_lists_must_be_lists_of_strings(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'tools = "agents.tools.hr:search_policies"\nkeywords = [1, 2]\n')
    assert '[departments.hr] tools must be a list of strings, got "agents.tools.hr:search_policies"' in message
    assert "[departments.hr] keywords must be a list of strings, got [1, 2]" in message


def test_tool_path_needs_module_and_attribute(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'tools = ["agents.tools.hr.search_policies"]\n')
    assert '[departments.hr] tools has "agents.tools.hr.search_policies", which is not an import path' in message


def test_authorized_imports_are_module_names(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'authorized_imports = ["pandas", "os; rm -rf /"]\n')
    assert '[departments.hr] authorized_imports has "os; rm -rf /", which is not a module name' in message


def test_file_types_are_extensions(tmp_path):
    company = load_company(write(tmp_path, MINIMAL + 'file_types = [".CSV", "xlsx"]\n'))
    assert company.departments["hr"].file_types == ("csv", "xlsx")
    message = config_error(tmp_path, MINIMAL + 'file_types = ["csv files"]\n')
    assert '[departments.hr] file_types has "csv files", which is not a file extension' in message


def test_unknown_department_key_is_a_typo(tmp_path):
    message = config_error(tmp_path, MINIMAL + "max_step = 4\n")
    assert '[departments.hr] unknown key "max_step" (did you mean "max_steps"?)' in message


def test_unknown_top_level_and_company_keys(tmp_path):
    message = config_error(tmp_path, '[company]\nnmae = "Acme"\n\n[department.hr]\ndescription = "x"\n')
    assert 'unknown key "department" (did you mean "departments"?)' in message
    assert '[company] unknown key "nmae" (did you mean "name"?)' in message


def test_invalid_toml_reports_file_and_line(tmp_path):
    message = config_error(tmp_path, MINIMAL + "max_steps = = 3\n")
    assert "invalid TOML" in message
    assert "line 4" in message


def test_empty_file_has_no_departments(tmp_path):
    message = config_error(tmp_path, "")
    assert "no departments defined" in message
    message = config_error(tmp_path, '[company]\nname = "Acme"\n')
    assert "no departments defined" in message


def test_missing_file_says_which(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load_company(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["HR", "human-resources", "2nd_line", "ops team"])
def test_department_names_must_work_as_a_prefix(tmp_path, name):
    message = config_error(tmp_path, f'[departments."{name}"]\ndescription = "x"\n')
    assert f"[departments.{name}] department names must be lowercase identifiers" in message
    assert '"hr:"' in message


def test_tool_module_that_does_not_import(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'tools = ["acme_missing_pkg.tools:lookup"]\n')
    assert "[departments.hr] tool 'acme_missing_pkg.tools:lookup'" in message
    assert "cannot import module 'acme_missing_pkg.tools'" in message


def test_tool_attribute_that_does_not_exist(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'tools = ["agents.tools.hr:serch_policies"]\n')
    assert "[departments.hr] tool 'agents.tools.hr:serch_policies'" in message
    assert "has no attribute 'serch_policies'" in message


def test_attribute_that_is_not_a_tool(tmp_path):
    message = config_error(tmp_path, MINIMAL + 'tools = ["agents.tools.hr:HR_CONTACT"]\n')
    assert "[departments.hr] tool 'agents.tools.hr:HR_CONTACT'" in message
    assert "expected a smolagents Tool" in message


def test_data_dir_must_exist_and_resolves_against_the_file(tmp_path):
    (tmp_path / "hrdata").mkdir()
    company = load_company(write(tmp_path, MINIMAL + 'data_dir = "hrdata"\n'))
    assert company.departments["hr"].data_dir == (tmp_path / "hrdata").resolve()
    message = config_error(tmp_path, MINIMAL + 'data_dir = "missing"\n')
    assert '[departments.hr] data_dir is "missing"' in message and "is not a folder" in message


def test_a_channel_maps_to_one_department(tmp_path):
    message = config_error(
        tmp_path,
        MINIMAL + 'slack_channels = ["help"]\n[departments.it]\ndescription = "x"\nslack_channels = ["#help"]\n',
    )
    assert '[departments.it] slack_channels has "#help"' not in message  # the leading '#' is dropped
    assert '[departments.it] slack_channels has "help", which is already mapped to [departments.hr]' in message


def test_every_problem_is_reported_at_once(tmp_path):
    error_text = MINIMAL + 'max_steps = "six"\ncolour = "blue"\n[departments.sales]\nstep_timeout_s = -1\n'
    path = write(tmp_path, error_text)
    with pytest.raises(ConfigError) as info:
        load_company(path)
    assert len(info.value.errors) == 4  # max_steps, colour, sales description, sales step_timeout_s
    assert all(str(path) in line for line in info.value.errors)


def test_access_table_is_validated(tmp_path):
    message = config_error(tmp_path, MINIMAL + '[departments.hr.access]\nrestricted = "yes"\nslack_user = ["U1"]\n')
    assert "[departments.hr.access] restricted must be true or false, got \"yes\"" in message
    assert '[departments.hr.access] unknown key "slack_user" (did you mean "slack_users"?)' in message


def test_access_lists_without_restricted_are_refused(tmp_path):
    message = config_error(tmp_path, MINIMAL + '[departments.hr.access]\nslack_users = ["U1"]\n')
    assert "[departments.hr.access] restricted is false" in message
    assert "set restricted = true" in message


# -- a company's own tools, from its own package ----------------------------------------------------------


ACME_TOOLS = '''
"""Acme's own tools, living outside agentdesk."""
from smolagents import Tool, tool

from agents.departments import current_data_dir
from agents.tools.hr import search_policies as policies


@tool
def ticket_status(ticket_id: str) -> str:
    """Looks up a support ticket.

    Args:
        ticket_id: The ticket number, e.g. "ACME-12".
    """
    return f"{ticket_id} is open"


class OnCall(Tool):
    name = "on_call"
    description = "Who is on call this week."
    inputs = {}
    output_type = "string"

    def forward(self):
        return "Priya"


def data_folder() -> str:
    """Says which data folder the department's tools read.

    Returns the folder as a string.
    """
    return str(current_data_dir())


def undocumented(x):
    return x
'''


@pytest.fixture
def acme_package(tmp_path, monkeypatch):
    package = tmp_path / "acme_pkg"
    package.mkdir()
    (package / "acme_support_tools.py").write_text(ACME_TOOLS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(package))
    yield package
    sys.modules.pop("acme_support_tools", None)


def test_company_adds_its_own_tools_without_forking(tmp_path, acme_package):
    (tmp_path / "support-data").mkdir()
    path = write(
        tmp_path,
        """
        [company]
        name = "Acme"

        [departments.support]
        description = "Customer support"
        tools = [
          "acme_support_tools:ticket_status",
          "acme_support_tools:OnCall",
          "acme_support_tools:data_folder",
          "agents.tools.hr:search_policies",
        ]
        data_dir = "support-data"
        """,
    )
    support = load_company(path).departments["support"]
    tools = {t.name: t for t in support.load_tools()}
    assert set(tools) == {"ticket_status", "on_call", "data_folder", "search_policies"}
    assert tools["ticket_status"](ticket_id="ACME-12") == "ACME-12 is open"
    assert tools["on_call"]() == "Priya"
    assert tools["data_folder"]() == str((tmp_path / "support-data").resolve())


def test_function_without_a_usable_docstring_is_refused(tmp_path, acme_package):
    message = config_error(tmp_path, MINIMAL + 'tools = ["acme_support_tools:undocumented"]\n')
    assert "[departments.hr] tool 'acme_support_tools:undocumented': not a usable tool" in message


def test_two_tools_with_one_name_are_refused(tmp_path, acme_package):
    message = config_error(
        tmp_path, MINIMAL + 'tools = ["agents.tools.hr:search_policies", "acme_support_tools:policies"]\n'
    )
    assert (
        '[departments.hr] tools "acme_support_tools:policies" and "agents.tools.hr:search_policies" are both '
        'named "search_policies"'
    ) in message


# -- access policy -----------------------------------------------------------------------------------------


def request(platform: str = "slack", **overrides) -> ChatRequest:
    fields = dict(platform=platform, workspace="T0NORTH", channel="C0GENERAL", thread="1.0", user="U_ALICE", text="hi")
    fields.update(overrides)
    return ChatRequest(**fields)


def test_open_department_allows_everyone():
    assert AccessPolicy().allows(request())
    assert AccessPolicy().allows(request("teams", user="29:anyone"))


def test_restricted_with_no_lists_allows_only_the_terminal():
    locked = AccessPolicy(restricted=True)
    assert not locked.allows(request())
    assert not locked.allows(request("teams"))
    assert locked.allows(request("terminal", user="local"))
    assert not locked.allows(request("discord"))


def test_restricted_slack_matches_channel_user_group_or_email():
    policy = AccessPolicy(
        restricted=True,
        slack_channels=("C0FINANCE", "#leadership"),
        slack_users=("U_CFO", "alice.chen@northwindlabs.com"),
        slack_usergroups=("S0MANAGERS",),
    )
    assert policy.allows(request(channel="C0FINANCE"))
    assert policy.allows(request(channel="C0OTHER01", channel_name="leadership"))
    assert policy.allows(request(user="U_CFO"))
    assert policy.allows(request(user="U_X", user_groups=("S0STAFF", "S0MANAGERS")))
    assert policy.allows(request(user="U_X", user_email="Alice.Chen@northwindlabs.com"))
    assert not policy.allows(request(user="U_BOB", user_email="bob.martins@northwindlabs.com"))
    assert not policy.allows(request(user="U_BOB", user_groups=("S0STAFF",), channel_name="general"))
    # Slack lists say nothing about Teams.
    assert not policy.allows(request("teams", user="U_CFO", channel="C0FINANCE"))


def test_restricted_teams_matches_tenant_team_channel_user_or_group():
    policy = AccessPolicy(
        restricted=True,
        teams_tenants=("tenant-north",),
        teams_teams=("team-sales",),
        teams_channels=("19:deals@thread.tacv2",),
        teams_users=("29:bob",),
        teams_groups=("aad-sales",),
    )
    teams = dict(workspace="tenant-other", channel="a:1personal", user="29:alice")
    assert policy.allows(request("teams", **{**teams, "workspace": "tenant-north"}))
    assert policy.allows(request("teams", **teams, team="team-sales"))
    assert policy.allows(request("teams", **{**teams, "channel": "19:deals@thread.tacv2;messageid=1700000000"}))
    assert policy.allows(request("teams", **{**teams, "user": "29:bob"}))
    assert policy.allows(request("teams", **teams, user_groups=("aad-sales",)))
    assert not policy.allows(request("teams", **teams, team="team-hr"))
    assert not policy.allows(request("slack", workspace="tenant-north"))


def test_access_from_file(tmp_path):
    company = load_company(
        write(
            tmp_path,
            MINIMAL
            + "[departments.hr.access]\nrestricted = true\n"
            + 'slack_channels = ["hr-private"]\nteams_users = ["29:carla"]\n',
        )
    )
    access = company.departments["hr"].access
    assert access.restricted
    assert access.allows(request(channel_name="hr-private"))
    assert access.allows(request("teams", user="29:carla"))
    assert not access.allows(request(channel_name="general"))


def test_department_is_frozen():
    department = Department(name="hr", description="x")
    with pytest.raises(AttributeError):
        department.max_steps = 99  # type: ignore[misc]


def test_suggested_prompts_are_strings_of_reasonable_length(tmp_path):
    bad = tmp_path / "d.toml"
    bad.write_text('[departments.hr]\ndescription = "HR"\nsuggested_prompts = ["ok", 3, "' + "x" * 300 + '"]\n')
    with pytest.raises(Exception, match="suggested_prompts"):
        load_company(bad)
    assert load_company(BUNDLED_CONFIG).departments["hr"].suggested_prompts
