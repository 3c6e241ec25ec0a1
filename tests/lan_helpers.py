"""Helpers shared by test modules, moved out of tests/test_lan_https.py: no test module
imports another (tests/test_layering.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.browser import CHROMIUM, CHROMIUM_FLAGS, write_y4m

if TYPE_CHECKING:
    from playwright.sync_api import Browser


HOST = "classroom.test"
OUTSIDE = "bank.example"  # a name the local CA may not certify


@contextmanager
def chromium_at(home: Path, webcam: Path, ca: Path | None = None) -> Iterator[Browser]:
    """Chromium that resolves classroom.test to 127.0.0.1, with a fake webcam; with ``ca``,
    that CA trusted in the NSS store of ``home`` (Chromium on Linux reads ~/.pki/nssdb)."""
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "HOME": str(home)}
    if ca is not None:
        certutil = shutil.which("certutil")
        assert certutil, "certutil missing: apt-get install libnss3-tools (scripts/test does)"
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True)
        db = f"sql:{nssdb}"
        subprocess.run([certutil, "-d", db, "-N", "--empty-password"], check=True, env=env)
        subprocess.run(
            [certutil, "-d", db, "-A", "-t", "C,,", "-n", "classpulse", "-i", str(ca)],
            check=True,
            env=env,
        )
    write_y4m(webcam)
    args = [
        *CHROMIUM_FLAGS,
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1,MAP {OUTSIDE} 127.0.0.1",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={webcam}",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args, env=env)
        try:
            yield browser
        finally:
            browser.close()
