"""The HTML pages and their static files, served by the real app on the test database and Redis.

The pages are shells: they must render (200, with the hooks the browser test and the scripts
rely on) without any login, and render no data on the server. The JS is syntax-checked with
node where node is installed; the behaviour is covered by the Chromium end-to-end test.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from classpulse.settings import REPO_ROOT, Settings

JS_DIR = REPO_ROOT / "web" / "static" / "js"
JS_FILES = sorted(JS_DIR.rglob("*.js"))
# Parse each page script in a blank page: a module imported from a blob: URL is parsed first (a
# SyntaxError there), then fails to resolve its relative imports, or (none) runs and fails to
# find its page; anything but a SyntaxError means the file parsed.
_PARSE_JS = """async src => {
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  try { await import(url); return null; }
  catch (e) { return e instanceof SyntaxError ? String(e) : null; }
}"""


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_root_redirects_by_cookie(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 303, 307)
    assert r.headers["location"].endswith("/login")
    client.cookies.set("cp_access", "anything")
    r = client.get("/", follow_redirects=False)
    assert r.headers["location"].endswith("/sessions")


@pytest.mark.parametrize(
    ("path", "hooks"),
    [
        ("/login", ['id="login-form"', 'id="email"', 'id="password"', "/static/js/login.js"]),
        (
            "/sessions",
            ['id="create-form"', 'id="session-list"', 'id="logout"', "/static/js/sessions.js"],
        ),
        ("/privacy", ["Article 5(1)(f)"]),
    ],
)
def test_pages_render_without_login(client: TestClient, path: str, hooks: list[str]) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    body = r.text
    assert body.startswith("<!doctype html>")
    assert "/static/css/app.css" in body and "/static/js/api.js" in body
    assert 'href="/privacy"' in body
    for hook in hooks:
        assert hook in body, hook


def test_dashboard_page_hooks(client: TestClient) -> None:
    r = client.get("/sessions/0b7d1f7e-0000-4000-8000-000000000001")
    assert r.status_code == 200
    body = r.text
    assert 'data-session-id="0b7d1f7e-0000-4000-8000-000000000001"' in body
    for hook in (
        'id="conn-state"',
        'id="tiles"',
        'id="tile-template"',
        'class="emotion"',
        'class="presence"',
        'id="distribution-chart"',
        'id="timeline-chart"',
        'id="history-link"',
        'id="facing-panel"',
        'id="join-qr"',
        "/static/vendor/chart.umd.js",
        "/static/js/dashboard.js",
        "EU AI Act",
        "No video is stored",
    ):
        assert hook in body, hook


def test_join_page_hooks(client: TestClient) -> None:
    r = client.get("/join/ABCD2345")
    assert r.status_code == 200
    body = r.text
    assert 'data-join-code="ABCD2345"' in body
    for hook in (
        "consent-accept",
        "consent-decline",
        "display-name",
        "join-submit",
        "start",
        "stop",
        "withdraw",
        "conn-state",
        "self-emotion",
        "preview",
    ):
        assert f'id="{hook}"' in body, hook
    assert 'data-emotion="none"' in body
    assert "/static/js/student.js" in body


def test_user_input_in_paths_is_escaped(client: TestClient) -> None:
    r = client.get("/join/" + quote('x"><img src=x onerror=alert(1)>', safe=""))
    assert r.status_code == 200
    assert "<img src=x" not in r.text
    assert "&#34;&gt;&lt;img src=x" in r.text


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/css/app.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/static/js/api.js", "javascript"),
        ("/static/js/dashboard.js", "javascript"),
        ("/static/js/student.js", "javascript"),
        ("/static/js/sessions.js", "javascript"),
        ("/static/js/login.js", "javascript"),
        ("/static/vendor/chart.umd.js", "javascript"),
    ],
)
def test_static_files_served(client: TestClient, path: str, kind: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert kind in r.headers["content-type"]
    assert len(r.content) > 100


def test_chart_js_is_vendored_with_its_licence() -> None:
    vendor = REPO_ROOT / "web" / "static" / "vendor"
    assert "Chart.js v4" in (vendor / "chart.umd.js").read_text(encoding="utf-8")[:200]
    assert "MIT License" in (vendor / "chart.js.LICENSE.md").read_text(encoding="utf-8")


def test_qr_svg_for_own_join_link(client: TestClient) -> None:
    url = "http://testserver/join/ABCD2345"
    r = client.get("/qr.svg", params={"data": url})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in r.text
    assert "<path" in r.text


@pytest.mark.parametrize(
    "data",
    [
        "http://evil.example/join/ABCD2345",
        "https://testserver/join/ABCD2345",  # another origin of the same host name
        "http://testserver/login",
        "http://testserver/join/",
        "http://testserver/join/ABCD2345/../../x",
        "http://testserver.evil.example/join/ABCD2345",
    ],
)
def test_qr_svg_refuses_other_urls(client: TestClient, data: str) -> None:
    assert client.get("/qr.svg", params={"data": data}).status_code == 400


def test_qr_svg_accepts_public_url(settings: Settings) -> None:
    public = settings.model_copy(update={"public_url": "https://pulse.school.example"})
    with TestClient(create_app(public)) as c:
        ok = c.get("/qr.svg", params={"data": "https://pulse.school.example/join/ABCD2345"})
        assert ok.status_code == 200
        other = c.get("/qr.svg", params={"data": "https://other.example/join/ABCD2345"})
        assert other.status_code == 400


def test_js_syntax() -> None:
    """Every page script and module parses, checked by the browser the pages run in, in a blank
    page (Biome in scripts/test parses them too)."""
    from tests.browser import chromium

    with chromium() as browser:
        page = browser.new_page()
        names = [str(path.relative_to(JS_DIR)) for path in JS_FILES]
        errors = {name: page.evaluate(_PARSE_JS, (JS_DIR / name).read_text()) for name in names}
        # The check itself: a module that doesn't parse is caught.
        assert page.evaluate(_PARSE_JS, "export const x = ;")
    assert names and errors == dict.fromkeys(names)
