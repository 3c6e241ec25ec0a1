"""HTML pages: thin server-rendered shells; every piece of data arrives through the API in JS.

No page reads the database or renders user data on the server, so the pages need no auth of
their own: the API answers 401 and the page's script goes to /login.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Annotated

import segno
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.auth import ACCESS_COOKIE, TokenError, decode_access_token
from app.deps import SettingsDep, Templates, get_resources
from classpulse.contracts import ATTENTION_WINDOW_S
from records.reports import NEGATIVE

router = APIRouter(include_in_schema=False)
# The span of a student's share facing the screen, for the pages' words ("of the last 5 min").
WINDOW = f"{ATTENTION_WINDOW_S:g}"

# Scripts and styles only from this origin (Chart.js is vendored); `connect-src 'self'` also
# covers same-origin ws:/wss: in current browsers; camera previews use a MediaStream, not a URL.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# The student page runs the face detector in WebAssembly (edge capture): compiling a module
# needs 'wasm-unsafe-eval', which allows WebAssembly compilation and nothing else (no eval, no
# inline script); the module itself comes from this origin. Only the join page gets it.
JOIN_CSP = CSP.replace("script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';")
# nosniff, Referrer-Policy, X-Frame-Options and HSTS come with every response (app.http_guard).
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    # The camera for this origin only (the student page); nothing else is needed.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}

SessionId = Annotated[str, Path(min_length=1, max_length=64)]
JoinCode = Annotated[str, Path(min_length=1, max_length=64)]
# A join link is a base URL, "/join/" and a code: nothing after the code, no other path.
_JOIN_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _cookie_role(request: Request) -> str | None:
    """The role the access cookie's token was signed with (None: no valid cookie). Only for
    what a page shows; every API checks the account itself (a revoked token gets a 401 there)."""
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        return None
    try:
        return decode_access_token(get_resources(request).settings, token).role
    except TokenError:
        return None


def _admin_cookie(request: Request) -> bool:
    """Whether the access cookie is an admin's: which nav links to show."""
    return _cookie_role(request) == "admin"


def _page(
    templates: Templates, request: Request, template: str, csp: str = CSP, **context: object
) -> HTMLResponse:
    context.setdefault("nav_admin", _admin_cookie(request))
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(PAGE_HEADERS)
    response.headers["Content-Security-Policy"] = csp
    return response


@router.get("/")
def index(request: Request) -> RedirectResponse:
    """Teachers with a session cookie go to their sessions, everyone else to the login."""
    target = "/sessions" if request.cookies.get(ACCESS_COOKIE) else "/login"
    return RedirectResponse(target, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, templates: Templates) -> HTMLResponse:
    return _page(templates, request, "login.html", page="login")


@router.get("/sessions", response_class=HTMLResponse)
def sessions_page(request: Request, templates: Templates) -> HTMLResponse:
    return _page(templates, request, "sessions.html", page="sessions", teacher=True)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
def dashboard_page(request: Request, templates: Templates, session_id: SessionId) -> HTMLResponse:
    # The labels the reports and alerts count as negative: the tiles' "needs a look" uses the same.
    return _page(
        templates,
        request,
        "dashboard.html",
        page="dashboard",
        teacher=True,
        session_id=session_id,
        negative=" ".join(NEGATIVE),
        attention_window_s=WINDOW,
    )


@router.get("/sessions/{session_id}/history", response_class=HTMLResponse)
def history_page(request: Request, templates: Templates, session_id: SessionId) -> HTMLResponse:
    return _page(
        templates, request, "history.html", page="history", teacher=True, session_id=session_id
    )


@router.get("/join/{code}", response_class=HTMLResponse)
def join_page(
    request: Request, templates: Templates, settings: SettingsDep, code: JoinCode
) -> HTMLResponse:
    # Where a page opened over plain HTTP (no camera: not a secure context) sends the student.
    secure = settings.public_url if (settings.public_url or "").startswith("https://") else None
    return _page(
        templates,
        request,
        "join.html",
        csp=JOIN_CSP,
        page="join",
        join_code=code,
        secure_join_url=secure and secure.rstrip("/") + "/join/" + code,
        attention_window_s=WINDOW,
    )


@router.get("/privacy", response_class=HTMLResponse)
def privacy_page(request: Request, templates: Templates) -> HTMLResponse:
    return _page(templates, request, "privacy.html", page="privacy")


# Admin pages: shells like the others; the admin APIs they call answer 403 to anyone else, and
# the page then says "administrators only".
ADMIN_PAGES = {
    "people": "People",
    "policy": "Privacy policy",
    "reports": "Reports",
    "audit": "Audit log",
    "erasure": "Erasure",
    "status": "System status",
}


@router.get("/admin")
def admin_index() -> RedirectResponse:
    return RedirectResponse("/admin/people", status_code=303)


def _admin_page(name: str) -> Callable[[Request, Jinja2Templates], HTMLResponse]:
    """The route function of one admin page."""

    def page(request: Request, templates: Templates) -> HTMLResponse:
        response = _page(
            templates,
            request,
            f"admin_{name}.html",
            page=f"admin-{name}",
            teacher=True,
            admin_pages=ADMIN_PAGES,
            admin_page=name,
        )
        # A signed-in teacher gets the page's "administrators only" state with a 403, as from
        # the admin APIs; without a valid cookie the page's script sends the visitor to log in.
        role = _cookie_role(request)
        if role is not None and role != "admin":
            response.status_code = 403
        return response

    page.__name__ = f"admin_{name}_page"
    return page


for _name in ADMIN_PAGES:
    router.add_api_route(
        f"/admin/{_name}", _admin_page(_name), methods=["GET"], response_class=HTMLResponse
    )


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, templates: Templates) -> HTMLResponse:
    return _page(templates, request, "account.html", page="account", teacher=True)


@router.get("/set-password", response_class=HTMLResponse)
def set_password_page(request: Request, templates: Templates) -> HTMLResponse:
    """Where a one-time link leads; the token is in the fragment, which the server never sees."""
    return _page(templates, request, "set_password.html", page="set-password")


def is_join_link(data: str, request: Request, settings: SettingsDep) -> bool:
    """True for a join link of this service: this host's or the configured public URL's."""
    bases = [str(request.base_url)]
    if settings.public_url:
        bases.append(settings.public_url)
    for base in bases:
        prefix = base.rstrip("/") + "/join/"
        if data.startswith(prefix) and _JOIN_CODE.fullmatch(data[len(prefix) :]):
            return True
    return False


@router.get("/qr.svg")
def qr_svg(
    request: Request, settings: SettingsDep, data: Annotated[str, Query(max_length=512)]
) -> Response:
    """An SVG QR code of one of this service's join links, to project in the classroom.

    Restricted to join links so the endpoint can't be used to brand arbitrary URLs as ours.
    """
    if not is_join_link(data, request, settings):
        raise HTTPException(status_code=400, detail="only this service's join links")
    buf = io.BytesIO()
    # A white quiet zone so the code scans when projected on a dark slide.
    segno.make(data, error="m").save(
        buf,
        kind="svg",
        scale=8,
        border=4,
        dark="#000",
        light="#fff",
        xmldecl=False,
        title="QR code of the join link",
    )
    return Response(
        buf.getvalue(),
        media_type="image/svg+xml",
        headers={"Cache-Control": "private, max-age=3600"},
    )
