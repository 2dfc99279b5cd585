"""The bundled department tools answer what a person would ask, from the example company's data."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from agents.chat import Caller
from agents.departments import BUNDLED_COMPANY_DIR, load_company
from agents.settings import BUNDLED_CONFIG
from agents.tools import NoCaller, bind_caller
from agents.tools.hr import benefits_summary, leave_balance, search_policies
from agents.tools.marketing import campaign_data, campaign_summary
from agents.tools.sales import compare_products, find_products, price_quote


def as_caller(platform: str, user: str, email: str | None = None):
    return bind_caller(Caller(platform=platform, workspace="T0NORTH", user=user, email=email))


# -- HR ---------------------------------------------------------------------------------------------------


def test_leave_balance_is_the_askers_own():
    with as_caller("slack", "U_ALICE"):
        alice = leave_balance()
    with as_caller("slack", "U_BOB"):
        bob = leave_balance()
    assert alice["employee"] == "Alice Chen"
    assert {k: alice[k] for k in ("entitlement_days", "carried_over_days", "taken_days", "booked_days",
                                  "remaining_days")} == {
        "entitlement_days": 25, "carried_over_days": 3, "taken_days": 9, "booked_days": 4, "remaining_days": 15,
    }
    assert bob["employee"] == "Bob Martins"
    assert bob["remaining_days"] == 10.5
    json.dumps([alice, bob])


def test_leave_balance_knows_people_on_every_platform():
    with as_caller("teams", "29:alice"):
        assert leave_balance()["employee"] == "Alice Chen"
    with as_caller("terminal", "local"):
        assert leave_balance()["employee"] == "Dana Okafor"
    # Someone whose chat id is not linked is found by the email the platform vouches for.
    with as_caller("slack", "U_NEWID", email="Farid.Haddad@northwindlabs.com"):
        assert leave_balance()["employee"] == "Farid Haddad"


def test_leave_balance_for_an_unknown_person_says_so():
    with as_caller("slack", "U_STRANGER", email="visitor@example.com"):
        answer = leave_balance()
    assert answer["found"] is False
    assert "no leave record for you" in answer["message"]
    assert "U_STRANGER" in answer["message"]


def test_leave_balance_takes_no_identity_from_the_model():
    assert leave_balance.inputs == {}
    with pytest.raises(NoCaller, match="no caller is bound"):
        leave_balance()


def test_a_slack_id_does_not_match_the_teams_column():
    with as_caller("teams", "U_ALICE"):
        assert leave_balance()["found"] is False


def test_policy_search_finds_parental_leave_for_paternity():
    answer = search_policies(query="how long is paternity leave")
    first = answer.split("\n2. ")[0]
    assert "Parental Leave Policy" in first
    assert "16 weeks" in first


@pytest.mark.parametrize(
    "question, policy",
    [
        ("can I claim a hotel in London", "Travel and Expenses Policy"),
        ("working from another country", "Remote and Hybrid Work Policy"),
        ("do I need a doctor's note when I'm sick", "Sick Leave Policy"),
        ("how many days can I carry over", "Annual Leave Policy"),
        ("report harassment anonymously", "Code of Conduct"),
    ],
)
def test_policy_search_ranks_the_right_policy_first(question, policy):
    first = search_policies(query=question).split("\n2. ")[0]
    assert policy in first


def test_policy_search_with_no_match_lists_the_policies():
    answer = search_policies(query="zebra migration")
    assert "No HR policy section matches" in answer
    assert "Parental Leave Policy" in answer


def test_benefits_summary_filters_by_category():
    everything = benefits_summary()
    assert "health" in everything["categories"] and "retirement" in everything["categories"]
    retirement = benefits_summary(category="Retirement")["benefits"]
    assert {b["benefit"] for b in retirement} == {"Group pension", "401(k)"}
    with pytest.raises(ValueError, match="categories are"):
        benefits_summary(category="yachts")


# -- Sales ------------------------------------------------------------------------------------------------


def test_quote_applies_volume_discount_and_vat_in_euros():
    quote = price_quote(sku="NW-AQ100", quantity=60, region="EU")
    assert quote["currency"] == "EUR"
    assert quote["unit_price"] == 139.00
    assert quote["subtotal"] == 8340.00  # 60 x 139
    assert quote["discount_rate"] == 0.10  # sensors, 50+ tier
    assert quote["discount"] == 834.00
    assert quote["net"] == 7506.00
    assert quote["tax"] == 1576.26  # 21% Dutch VAT
    assert quote["total"] == 9082.26
    assert any("100 or more gets a 15% discount" in n for n in quote["notes"])
    json.dumps(quote)


def test_quote_small_order_and_region_aliases():
    quote = price_quote(sku="nw-gw100", quantity=2, region="United Kingdom")
    assert (quote["region"], quote["currency"]) == ("UK", "GBP")
    assert quote["discount"] == 0
    assert quote["net"] == 658.00
    assert quote["total"] == 789.60  # + 20% VAT
    us = price_quote(sku="NW-SW-ENT", quantity=1000, region="usa")
    assert us["discount_rate"] == 0.25 and us["tax"] == 0 and us["total"] == 36000.00


def test_services_are_never_discounted():
    quote = price_quote(sku="NW-SV-INST", quantity=800, region="APAC")
    assert quote["discount"] == 0
    assert quote["total"] == round(800 * 50 * 1.09, 2)


def test_quote_errors_say_what_is_valid():
    with pytest.raises(ValueError, match=r"Unknown SKU 'NW-AQ10'\. Did you mean .*NW-AQ100"):
        price_quote(sku="NW-AQ10", quantity=1, region="US")
    with pytest.raises(ValueError, match="Unknown region 'Mars'. Quotes are available for: US, EU, UK, APAC"):
        price_quote(sku="NW-AQ100", quantity=1, region="Mars")
    with pytest.raises(ValueError, match="positive whole number"):
        price_quote(sku="NW-AQ100", quantity=0, region="US")


def test_find_products_ranks_the_best_match_first():
    results = find_products(query="CO2 sensor with e-ink display")
    assert results[0]["sku"] == "NW-AQ200"
    assert results[0]["list_prices"]["UK"] == {"price": 205.0, "currency": "GBP"}
    assert len(find_products(query="all")) == 13
    assert find_products(query="submarine") == []


def test_find_products_by_sku_returns_that_product_and_searches_return_the_best_few():
    assert [p["sku"] for p in find_products(query="NW-AQ100")] == ["NW-AQ100"]
    assert [p["sku"] for p in find_products(query="compare nw-aq100 and NW-OC300")] == ["NW-AQ100", "NW-OC300"]
    assert len(find_products(query="sensor")) == 5


def test_compare_products_shows_shared_and_distinct_features():
    comparison = compare_products(skus=["NW-AQ100", "NW-AQ200"])
    assert [p["sku"] for p in comparison["products"]] == ["NW-AQ100", "NW-AQ200"]
    assert {"CO2", "PM2.5", "LoRaWAN"} <= set(comparison["shared_features"])
    assert "e-ink display" in comparison["only_in"]["NW-AQ200"]
    assert comparison["only_in"]["NW-AQ100"] == ["5-year battery"]
    with pytest.raises(ValueError, match="at least two"):
        compare_products(skus=["NW-AQ100"])


# -- Marketing --------------------------------------------------------------------------------------------


def read_campaigns_csv() -> list[dict]:
    with (BUNDLED_COMPANY_DIR / "marketing" / "campaigns.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_campaign_data_is_every_row_with_numbers():
    rows = campaign_data()
    raw = read_campaigns_csv()
    assert len(rows) == len(raw) >= 30
    assert set(rows[0]) == {"campaign", "channel", "month", "spend", "impressions", "clicks", "conversions", "revenue"}
    assert round(sum(r["spend"] for r in rows), 2) == round(sum(float(r["spend"]) for r in raw), 2) == 208590.00
    assert sum(r["conversions"] for r in rows) == 1689
    json.dumps(rows)


def test_campaign_summary_totals_match_the_rows():
    rows = campaign_data()
    by_channel = campaign_summary(group_by="channel")
    assert round(sum(g["spend"] for g in by_channel), 2) == round(sum(r["spend"] for r in rows), 2)
    assert sum(g["clicks"] for g in by_channel) == sum(r["clicks"] for r in rows)
    events = next(g for g in by_channel if g["channel"] == "Events")
    assert events["spend"] == 38000.00
    assert events["roas"] == round(events["revenue"] / events["spend"], 2)
    assert [g["revenue"] for g in by_channel] == sorted((g["revenue"] for g in by_channel), reverse=True)
    by_month = campaign_summary(group_by="month")
    assert sorted(g["month"] for g in by_month) == ["2026-07", "2026-08", "2026-09", "2026-10"]
    pairs = campaign_summary(group_by="campaign, month")
    assert {"campaign", "month"} <= set(pairs[0])


def test_campaign_summary_rejects_unknown_grouping():
    with pytest.raises(ValueError, match="group_by must be one or more of campaign, channel, month"):
        campaign_summary(group_by="region")


# -- where the data comes from ----------------------------------------------------------------------------

LEAVE_HEADER = (
    "employee_id,name,email,slack_user,teams_user,terminal_user,country,fte,annual_entitlement_days,"
    "carried_over_days,taken_days,booked_days,sick_days_taken,dependant_days_taken,as_of\n"
)


def test_department_data_dir_is_what_its_tools_read(tmp_path):
    data = tmp_path / "people"
    data.mkdir()
    (data / "leave.csv").write_text(LEAVE_HEADER + "A1,Zoe Acme,zoe@acme.test,U_ZOE,,,US,1,20,0,5,0,0,0,2026-01-31\n")
    config = tmp_path / "departments.toml"
    config.write_text(
        '[departments.people]\ndescription = "HR at Acme"\ntools = ["agents.tools.hr:leave_balance"]\n'
        'data_dir = "people"\n'
    )
    (balance,) = load_company(config).departments["people"].load_tools()
    with as_caller("slack", "U_ZOE"):
        assert balance()["remaining_days"] == 15
        # The module-level tool (no department bound) still reads the bundled company.
        assert leave_balance()["found"] is False


def test_env_var_overrides_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "leave.csv").write_text(LEAVE_HEADER + "A1,Yuki Env,,U_ALICE,,,JP,1,20,0,1,1,0,0,2026-01-31\n")
    monkeypatch.setenv("AGENTDESK_HR_DATA_DIR", str(tmp_path))
    (balance,) = [t for t in load_company(BUNDLED_CONFIG).departments["hr"].load_tools() if t.name == "leave_balance"]
    with as_caller("slack", "U_ALICE"):
        assert balance()["employee"] == "Yuki Env"


def test_bundled_data_files_exist():
    hr = BUNDLED_COMPANY_DIR / "hr"
    assert len(list((hr / "policies").glob("*.md"))) == 7
    for path in [hr / "leave.csv", hr / "benefits.csv", BUNDLED_COMPANY_DIR / "sales" / "products.csv",
                 BUNDLED_COMPANY_DIR / "sales" / "pricing.toml", BUNDLED_COMPANY_DIR / "marketing" / "campaigns.csv"]:
        assert Path(path).is_file(), path


def test_tools_see_the_caller_inside_smolagents_executor():
    """smolagents' local executor calls tools from a worker thread; load_tools(caller) still binds who asked."""
    from smolagents.local_python_executor import LocalPythonExecutor

    company = load_company(BUNDLED_CONFIG)
    executor = LocalPythonExecutor(list(company.departments["marketing"].authorized_imports))
    carla = Caller(platform="teams", workspace="tenant-north", user="29:carla")
    tools = company.departments["hr"].load_tools(carla) + company.departments["marketing"].load_tools(carla)
    executor.send_tools({t.name: t for t in tools})
    executor.send_variables({})
    output = executor(
        "import pandas as pd\n"
        "spend = pd.DataFrame(campaign_data())['spend'].sum()\n"
        "print(leave_balance()['employee'], round(spend, 2))\n"
    )
    assert output.logs.strip() == "Carla Diaz 208590.0"
