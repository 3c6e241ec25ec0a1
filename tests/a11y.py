"""Accessibility checks the Chromium tests share (no tests here): axe-core on a Playwright page.

    from tests.a11y import check_page

    check_page(page, "dashboard-live")   # -> None, or AssertionError listing what fails

``check_page(page, name: str) -> None`` (a stable signature: other test modules call it):

- checks the vendored ``web/static/vendor/axe-core/axe.min.js`` against ``AXE_SHA256`` (the
  checksum recorded in ``web/static/vendor/README.md``) before the page gets it;
- loads it into the page as a same-origin ``<script src>``, which the pages' CSP
  (``script-src 'self'``) allows: no ``bypass_csp`` needed, so the page is checked under its
  real policy. The page must be one of this service's (``/static/`` served by the gateway);
- runs axe on the whole document with the WCAG 2.0/2.1 level A and AA rules;
- saves a full-page screenshot to ``artifacts/screenshots/<name>.png`` (repo-relative; the
  folder is made when missing and git-ignored), whether or not the check passes;
- fails with one line per serious or critical violation: rule id, impact, help text, and the
  first few offending elements (CSS selector and axe's summary). Moderate and minor findings
  are not failures.

Give each page and state its own ``name`` (letters, digits, ``-`` and ``_``), e.g.
``"join-consent"``; the screenshot of an earlier call with the same name is replaced.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from typing import TYPE_CHECKING, Any

from classpulse.settings import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Page

AXE_VERSION = "4.14.1"
AXE_FILE = REPO_ROOT / "web" / "static" / "vendor" / "axe-core" / "axe.min.js"
AXE_URL = "/static/vendor/axe-core/axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
FAILING_IMPACTS = ("serious", "critical")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")

RUN_AXE = """
async (tags) => {
  const result = await axe.run(document, {
    runOnly: {type: "tag", values: tags},
    resultTypes: ["violations"],
  });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => ({target: n.target.join(" "), summary: n.failureSummary || ""})),
  }));
}
"""


@cache
def verified_axe() -> str:
    """The vendored axe-core's version, once its bytes match the recorded checksum."""
    digest = hashlib.sha256(AXE_FILE.read_bytes()).hexdigest()
    if digest != AXE_SHA256:
        raise AssertionError(
            f"{AXE_FILE} has sha256 {digest}, not the recorded {AXE_SHA256}: "
            "re-vendor it as web/static/vendor/README.md says"
        )
    return AXE_VERSION


def format_violations(violations: list[dict[str, Any]], name: str) -> str:
    """One readable line per violation, its first offending elements indented below it."""
    lines = [f"{name}: {len(violations)} serious/critical accessibility violation(s) (axe-core)"]
    for v in violations:
        lines.append(f"- {v['id']} [{v['impact']}]: {v['help']} ({len(v['nodes'])} element(s))")
        for node in v["nodes"][:5]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}: {summary[:300]}")
    return "\n".join(lines)


def check_page(page: Page, name: str) -> None:
    """Run axe-core (WCAG 2.1 A/AA) on the page as it is now; fail on serious/critical
    violations; save a screenshot to artifacts/screenshots/<name>.png."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r}: use letters, digits, '-' and '_'")
    verified_axe()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(url=AXE_URL)
    violations = page.evaluate(RUN_AXE, WCAG_TAGS)
    failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
    assert not failing, format_violations(failing, name)
