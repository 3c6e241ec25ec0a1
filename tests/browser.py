"""Helpers the Chromium tests share (no tests here): a fake webcam clip, launching Chromium with
its flags, a teacher account, the teacher's login and a student's join, both through the pages.

Playwright is imported inside the functions, as the tests themselves do.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from skimage import data as skdata

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from classpulse.cli.devserver import DevServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TEACHER = ("teacher@school.test", "teacher-password-1")
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def write_y4m(path: Path, frames: int = 30, size=(320, 240), face_px: int | None = None) -> None:
    """A Y4M clip of the astronaut's face drifting slightly, as a fake webcam feed; the face
    picture is ``face_px`` square (default: the frame's height less 20)."""
    w, h = size
    side = face_px or h - 20
    face = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:400, 60:460]
    face = cv2.resize(face, (side, side))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = np.full((h, w, 3), 100, np.uint8)
            dx = int(4 * np.sin(i / frames * 2 * np.pi))
            x = (w - face.shape[1]) // 2 + dx
            frame[10 : 10 + face.shape[0], x : x + face.shape[1]] = face
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@contextmanager
def chromium(webcam: Path | None = None, **clip: Any) -> Iterator[Browser]:
    """Headless Chromium, closed afterwards. With ``webcam`` (a path to write to): a fake camera
    playing the face clip of write_y4m (``clip``: its size, face_px) written there, camera
    prompts answered yes."""
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_FLAGS)
    if webcam is not None:
        write_y4m(webcam, **clip)
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={webcam}",
        ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def create_teacher(
    server: DevServer, admin_token: str, teacher=TEACHER, display_name: str = "Ms T"
) -> dict[str, Any]:
    """A teacher account made by the admin through the API; returns the created user."""
    email, password = teacher
    user = {"email": email, "password": password, "role": "teacher", "display_name": display_name}
    return server.api("POST", "/api/admin/users", user, admin_token)


def teacher_logged_in(browser: Browser, server: DevServer, teacher=TEACHER, **context: Any) -> Page:
    """A new page where the teacher has logged in through the login page (now on /sessions)."""
    page = browser.new_context(**context).new_page()
    page.goto(server.base + "/login")
    page.fill("input[type=email]", teacher[0])
    page.fill("input[type=password]", teacher[1])
    page.click("button[type=submit]")
    page.wait_for_url("**/sessions")
    return page


def student_joined(browser: Browser, join_url: str, name: str, consent: bool = True) -> Page:
    """A new page (camera allowed) where a student has joined through the join page, accepting or
    declining the consent."""
    page = browser.new_context(permissions=["camera"]).new_page()
    page.goto(join_url)
    page.click("#consent-accept" if consent else "#consent-decline")
    page.fill("#display-name", name)
    page.click("#join-submit")
    return page
