"""Host-side web tools against a loopback SearXNG stand-in, and the egress policy refusing every SSRF form."""
from __future__ import annotations

import pytest

from agents.egress import EgressPolicy, _system_resolve, bind_policy
from agents.tools import SourceCollector, bind_sources
from agents.tools.web import WebSearchError, visit_webpage, web_search
from tests.standins.search_server import SearchStandIn

LOOPBACK_OK = EgressPolicy(allow_private=("127.0.0.1",))


@pytest.fixture(scope="module")
def search():
    with SearchStandIn() as server:
        yield server


@pytest.fixture
def searxng(search, monkeypatch):
    monkeypatch.setenv("SEARCH_PROVIDER", "searxng")
    monkeypatch.setenv("SEARCH_API_URL", search.search_url)
    monkeypatch.delenv("SEARCH_API_KEY", raising=False)
    return search


def test_web_search_reads_searxng_json_and_reports_sources(searxng):
    collector = SourceCollector()
    with bind_policy(LOOPBACK_OK), bind_sources(collector):
        results = web_search(query="Airwise AW-3 sensor price", max_results=2)
    assert results[0] == {
        "title": "Airwise launches AW-3 indoor air quality sensor",
        "url": f"{searxng.base_url}/pages/airwise-aw3-launch",
        "snippet": "Airwise announced the AW-3, a CO2 and particulate sensor for offices, priced at $179 per unit.",
    }
    assert len(results) == 2
    assert searxng.queries[-1]["q"] == "Airwise AW-3 sensor price" and searxng.queries[-1]["format"] == "json"
    assert [s.url for s in collector.all()] == [r["url"] for r in results]


def test_visit_webpage_returns_readable_markdown_and_its_source(searxng):
    collector = SourceCollector()
    with bind_policy(LOOPBACK_OK), bind_sources(collector):
        page = visit_webpage(url=f"{searxng.base_url}/pages/sensora-funding")
    assert page.startswith("# Sensora raises $40 million Series C for building analytics\n")
    assert "**$40 million Series C**" in page and "track()" not in page
    (source,) = collector.all()
    assert source.title.startswith("Sensora raises") and source.url.endswith("/pages/sensora-funding")


def test_brave_and_tavily_request_shapes(search, monkeypatch):
    monkeypatch.setenv("SEARCH_API_KEY", "brave-key-123")
    monkeypatch.setenv("SEARCH_PROVIDER", "brave")
    monkeypatch.setenv("SEARCH_API_URL", f"{search.base_url}/res/v1/web/search")
    with bind_policy(LOOPBACK_OK):
        brave = web_search(query="ClimaCore pricing", max_results=1)
    assert brave[0]["title"] == "ClimaCore pricing: Cloud dashboard plans"
    assert search.queries[-1]["token"] == "brave-key-123" and search.queries[-1]["count"] == "1"
    monkeypatch.setenv("SEARCH_PROVIDER", "tavily")
    monkeypatch.setenv("SEARCH_API_URL", f"{search.base_url}/tavily")
    with bind_policy(LOOPBACK_OK):
        tavily = web_search(query="ClimaCore pricing", max_results=1)
    assert tavily == [dict(brave[0])]
    assert search.queries[-1]["authorization"] == "Bearer brave-key-123"
    assert search.queries[-1]["max_results"] == 1


def test_search_misconfiguration_says_what_to_set(monkeypatch):
    for name in ("SEARCH_PROVIDER", "SEARCH_API_URL", "SEARCH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(WebSearchError, match="SEARCH_PROVIDER .*searxng, brave or tavily"):
        web_search(query="anything")
    monkeypatch.setenv("SEARCH_PROVIDER", "brave")
    with pytest.raises(WebSearchError, match="needs SEARCH_API_KEY"):
        web_search(query="anything")


def test_unreachable_search_and_a_refused_search_host(monkeypatch, searxng):
    monkeypatch.setenv("SEARCH_API_URL", "http://127.0.0.1:9/search")
    with bind_policy(LOOPBACK_OK), pytest.raises(WebSearchError, match="web search is unreachable: 127.0.0.1"):
        web_search(query="anything")
    monkeypatch.setenv("SEARCH_API_URL", searxng.search_url)
    with pytest.raises(WebSearchError, match="egress policy: refused: 127.0.0.1 is a private, loopback"):
        web_search(query="anything")  # the default policy: public addresses only


@pytest.mark.parametrize("url, what", [
    ("http://127.0.0.1:{port}/pages/airwise-aw3-launch", "127.0.0.1 is a private, loopback"),
    ("http://localhost:{port}/", "localhost (127.0.0.1) is a private, loopback"),
    ("http://[::1]:{port}/", "::1 is a private"),
    ("http://2130706433:{port}/", "2130706433 is a private"),
    ("http://0x7f000001:{port}/", "0x7f000001 is a private"),
    ("http://0177.0.0.1:{port}/", "0177.0.0.1 is a private"),
    ("http://127.1:{port}/", "127.1 is a private"),
    ("http://[::ffff:127.0.0.1]:{port}/", "::ffff:127.0.0.1 is a private"),
    ("http://[::ffff:7f00:1]:{port}/", "::ffff:7f00:1 is a private"),
    ("http://[64:ff9b::7f00:1]/", "is a private"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata service"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is the cloud metadata service"),
    ("http://10.0.0.1/", "10.0.0.1 is a private"),
    ("http://172.16.5.4/", "172.16.5.4 is a private"),
    ("http://192.168.1.1/", "192.168.1.1 is a private"),
    ("http://100.64.0.1/", "100.64.0.1 is a private"),
    ("http://[fe80::1]/", "fe80::1 is a private"),
    ("http://0.0.0.0:{port}/", "0.0.0.0 is a private"),
    ("http://intranet.corp/", "intranet.corp (10.1.2.3) is a private"),
    ("http://rebind.example/", "rebind.example (127.0.0.1) is a private"),
    ("http://standin.test:{port}/redirect?to=http://127.0.0.1:{port}/pages/climacore-pricing",
     "127.0.0.1 is a private, loopback"),
    ("http://standin.test:{port}/redirect?to=http://169.254.169.254/", "cloud metadata service"),
    ("file:///etc/passwd", "only http and https"),
])
def test_every_private_form_is_refused_with_a_clear_message(search, url, what):
    names = {"intranet.corp": ["10.1.2.3"], "rebind.example": ["93.184.216.34", "127.0.0.1"],
             "standin.test": ["127.0.0.1"]}
    policy = EgressPolicy(allow_private=("standin.test",), resolve=lambda host: names.get(host) or _system_resolve(host))
    port = search.base_url.rsplit(":", 1)[1]
    with bind_policy(policy), pytest.raises(PermissionError) as refused:
        visit_webpage(url=url.format(port=port))
    message = str(refused.value)
    assert what in message and "refused" in message, message


def test_allow_private_lets_the_listed_host_through_even_by_name(search):
    port = search.base_url.rsplit(":", 1)[1]
    policy = EgressPolicy(allow_private=("standin.test",), resolve=lambda host: ["127.0.0.1"])
    with bind_policy(policy):
        page = visit_webpage(url=f"http://standin.test:{port}/pages/climacore-pricing")
        redirected = visit_webpage(url=f"http://standin.test:{port}/redirect?to=/pages/iaq-market-report")
    assert "$12 per sensor per month" in page
    assert "9% per year" in redirected and "URL: http://standin.test" in redirected
    with bind_policy(EgressPolicy(allow_private=("127.0.0.0/8",))):
        assert "Airwise" in visit_webpage(url=f"{search.base_url}/pages/airwise-aw3-launch")


def test_domain_lists_deny_wins():
    policy = EgressPolicy(allow_domains=("*.example.com", "docs.example.org"), deny_domains=("secret.example.com",))
    with bind_policy(policy):
        with pytest.raises(PermissionError, match="secret.example.com is on the egress deny list"):
            visit_webpage(url="https://secret.example.com/")
        with pytest.raises(PermissionError, match="other.example is not on the egress allow list"):
            visit_webpage(url="https://other.example/")


def test_content_type_and_size_caps(search):
    with bind_policy(LOOPBACK_OK):
        with pytest.raises(ConnectionError, match="application/octet-stream, which cannot be read as text"):
            visit_webpage(url=f"{search.base_url}/binary")
        page = visit_webpage(url=f"{search.base_url}/huge")
    assert page.endswith("(page cut at 8000 characters)") and len(page) < 9000
