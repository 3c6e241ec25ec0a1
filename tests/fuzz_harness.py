"""Schemathesis over the whole HTTP API: the harness shared by the CI test and the benchmark.

``tests/test_fuzz_api.py`` runs it briefly (a few examples per operation) and fails on any
finding; ``bench/fuzz_api.py`` runs it longer and prints the figures. No tests here.

What it does:

* serves the real app (``create_app``) with uvicorn on 127.0.0.1 in a thread, against the given
  PostgreSQL and Redis; the server's tracebacks are collected, so a 5xx comes with its cause;
* loads ``/openapi.json`` from it (Schemathesis 4: ``schemathesis.openapi.from_url``);
* for every operation and every identity (admin, teacher, student, anonymous), builds a fresh
  world first: new admin, teacher and other-teacher accounts, the teacher's session and the other
  teacher's, two joined students (one with consent, one without), stored buckets and alerts, and
  the default privacy policy. A destructive operation (delete a student or a session's data,
  end a session, withdraw, log out, deactivate an account, change the policy or the password)
  therefore never starves the next one of data or of a valid token;
* generates cases with Hypothesis (``APIOperation.as_strategy``) in positive and negative mode,
  derandomized so CI is repeatable; path parameters are half the time real ids of the world (so
  success bodies are validated too), half the time whatever Schemathesis generates;
* then sends the values that break storage layers, one parameter or body field at a time, with
  everything else real or generated: NUL in strings (PostgreSQL refuses it in text), integers
  past int4 and int8, the first and last dates and times Python can represent. Random
  generation reaches those rarely; this makes CI find them every run;
* authenticates each case with ``Authorization: Bearer <token>`` of the identity (the cookie
  path needs an ``X-ClassPulse-CSRF`` header on writes; bearer is what API clients use);
* checks each response with ``not_a_server_error`` and ``response_schema_conformance`` (plus
  any extra checks asked for) and records every failure instead of stopping at the first, with a
  curl line to reproduce it and the server's traceback.
"""

from __future__ import annotations

import itertools
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import redis
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session

from app.main import create_app
from classpulse import contracts
from classpulse import policy as org_policy
from classpulse.db import Alert, ClassBucket, EmotionBucket, make_engine
from classpulse.settings import REPO_ROOT, Settings
from tests.gateway_helpers import PASSWORD, bearer, make_user

IDENTITIES = ("admin", "teacher", "student", "anonymous")
# The gate: no 5xx and no body that contradicts its documented schema.
GATING_CHECKS: dict[str, Callable] = {
    "not_a_server_error": not_a_server_error,
    "response_schema_conformance": response_schema_conformance,
}
# Informational (bench --extra-checks): the routes document their success and 422 answers, not
# the 401/403/404 the shared dependencies give on every one of them.
EXTRA_CHECKS: dict[str, Callable] = {
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
}
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# 5xx answers that are an endpoint's job, not a fault: /readyz says 503 "not ready" when a
# dependency is slow or gone (on a loaded CI machine its 3 s checks can time out).
EXPECTED_5XX = {("GET /readyz", 503)}
# What breaks storage layers, by the kind of value a parameter or body field takes.
HOSTILE: dict[str, list[Any]] = {
    # PostgreSQL: "text fields cannot contain NUL (0x00) bytes"; one looks like an email address,
    # so it gets past the checks for those.
    "string": ["\x00", "nul\x00@school.example"],
    "integer": [2**63, -(2**63) - 1, 2**31, -(2**31) - 1],  # past int8 and int4
    "number": [1e308, -1e308],
    "date": ["9999-12-31", "0001-01-01"],
    "date-time": ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"],
}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_serial = itertools.count(1)
# Limits a classroom never reaches but the fuzzer does (it joins two students for each operation
# and identity, and logs in hundreds of times): raised so every case reaches the code behind.
_GENEROUS = {
    "joins_per_minute_per_address": 1_000_000,
    "joins_per_minute_per_session": 1_000_000,
    "join_failures_per_minute_per_address": 1_000_000,
    "login_attempts_per_minute": 1_000_000,
    "login_failures_per_minute_per_address": 1_000_000,
}


def fuzz_settings(database_url: str, redis_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings for a fuzzed gateway on this database and Redis."""
    return with_generous_limits(
        Settings(
            env="test",
            database_url=database_url,
            redis_url=redis_url,
            data_dir=data_dir,
            secret_key="fuzz-secret-key-which-is-long-enough-0123456789",
            **extra,
        )
    )


def with_generous_limits(settings: Settings) -> Settings:
    known = type(settings).model_fields
    return settings.model_copy(update={k: v for k, v in _GENEROUS.items() if k in known})


# --- the server -------------------------------------------------------------------------------
class _Tracebacks(logging.Handler):
    """Collects the tracebacks uvicorn logs for requests that raised (the 500s)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.items: list[str] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
        else:
            text = record.getMessage()
        with self.guard:  # the server's thread appends while the fuzzer's takes
            self.items.append(text)

    def take(self) -> list[str]:
        with self.guard:
            out, self.items = self.items, []
        return out


@contextmanager
def serve(settings: Settings) -> Iterator[tuple[str, _Tracebacks]]:
    """The gateway served by uvicorn on a free port of 127.0.0.1, in a thread; (base URL, the
    collector of the server's tracebacks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,  # leave the test run's logging alone
        log_level="warning",
        access_log=False,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    errors = _Tracebacks()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.asgi")]
    for lg in loggers:
        lg.addHandler(errors)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start:\n" + "\n".join(errors.take()))
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", errors
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        for lg in loggers:
            lg.removeHandler(errors)


# --- the data each operation runs against ------------------------------------------------------
@dataclass
class World:
    """Fresh accounts, sessions and students for one operation's run."""

    headers: dict[str, dict[str, str]]  # identity -> request headers
    known: dict[str, list[Any]]  # path parameter name -> real values worth trying
    teacher_email: str


def _seed(settings: Settings, engine: Any, session_id: str, students: list[str]) -> None:
    """Two buckets per student, class buckets and two alerts, as the aggregator writes them."""
    sid = uuid.UUID(session_id)
    step = timedelta(seconds=settings.bucket_seconds)
    with Session(engine) as db:
        for i, student in enumerate(students):
            db.add_all(
                EmotionBucket(
                    session_id=sid,
                    student_id=uuid.UUID(student),
                    bucket_start=T0 + k * step,
                    frames=5,
                    frames_with_face=4 - i,
                    prob_sums={"happy": 2.0, "sad": 1.0 - i, "neutral": 1.0},
                )
                for k in range(2)
            )
        db.add_all(
            ClassBucket(
                session_id=sid,
                bucket_start=T0 + k * step,
                frames=10,
                frames_with_face=7,
                prob_sums={"happy": 4.0, "sad": 1.0, "neutral": 2.0},
            )
            for k in range(2)
        )
        db.add_all(
            [
                Alert(session_id=sid, rule="negative_share", message="class", started_at=T0),
                Alert(
                    session_id=sid,
                    student_id=uuid.UUID(students[0]),
                    rule="no_face",
                    message="student",
                    started_at=T0 + step,
                    ended_at=T0 + 2 * step,
                ),
            ]
        )
        db.commit()


def make_world(settings: Settings, base_url: str, http: requests.Session, engine: Any) -> World:
    n = next(_serial)
    teacher_email = f"fuzz-teacher-{n}@school.example"
    admin = make_user(settings, f"fuzz-admin-{n}@school.example", "admin")
    teacher = make_user(settings, teacher_email)
    other = make_user(settings, f"fuzz-other-{n}@school.example")
    as_admin, as_teacher = bearer(settings, admin, "admin"), bearer(settings, teacher)

    with Session(engine) as db:
        policy_changed = org_policy.load(db) != org_policy.Policy()
    if policy_changed:  # an earlier operation changed it: back to the default for this one
        r = http.put(
            f"{base_url}/api/admin/policy", json=org_policy.Policy().as_dict(), headers=as_admin
        )
        r.raise_for_status()

    def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        r = http.post(base_url + path, json=body, headers=headers or {}, timeout=30)
        assert r.status_code == 201, (path, r.status_code, r.text)
        return r.json()

    session = post("/api/sessions", {"title": f"Fuzz {n}"}, as_teacher)
    theirs = post("/api/sessions", {"title": f"Other {n}"}, bearer(settings, other))
    code = session["join_code"]
    ada = post(f"/api/join/{code}", {"display_name": "Ada", "consent": True})
    bo = post(f"/api/join/{code}", {"display_name": "Bo", "consent": False})
    _seed(settings, engine, session["id"], [ada["student_id"], bo["student_id"]])
    return World(
        headers={
            "admin": as_admin,
            "teacher": as_teacher,
            "student": {"Authorization": "Bearer " + ada["token"]},
            "anonymous": {},
        },
        known={
            "session_id": [session["id"], theirs["id"]],
            "student_id": [ada["student_id"], bo["student_id"]],
            "code": [code, code.lower()],
            "user_id": [teacher, other, admin],
        },
        teacher_email=teacher_email,
    )


# --- hostile values ----------------------------------------------------------------------------
def _kinds(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    """The HOSTILE kinds a parameter or field schema admits (its anyOf options included)."""
    schema = _resolve(schema, components)
    out: list[str] = []
    for option in schema.get("anyOf") or schema.get("oneOf") or [schema]:
        option = _resolve(option, components)
        if "enum" in option or "const" in option:
            continue  # a closed set: anything else is refused before any code runs
        kind, fmt = option.get("type"), option.get("format")
        if kind == "string" and fmt in ("date", "date-time"):
            out.append(fmt)
        elif kind == "string" and fmt is None:
            out.append("string")
        elif kind in ("integer", "number"):
            out.append(kind)
    return out


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref else schema


Target = dict[tuple[str, str], Any]  # (location, name) -> value


def hostile_targets(raw: dict[str, Any], components: dict[str, Any]) -> list[Target]:
    """The hostile values to send to an operation (its raw OpenAPI object): each value its type
    admits in each parameter and top-level JSON body field alone, and in all the fields of one
    kind at once (a date range whose ends must be close: both at the last day)."""
    fields: list[tuple[str, str, str]] = []  # (location, name, kind)
    for p in raw.get("parameters", []):
        fields += [(p["in"], p["name"], k) for k in _kinds(p.get("schema", {}), components)]
    body = raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    properties = _resolve(body.get("schema", {}), components).get("properties", {})
    for name, schema in properties.items():
        fields += [("body", name, k) for k in _kinds(schema, components)]
    out: list[Target] = [
        {(location, name): v} for location, name, kind in fields for v in HOSTILE[kind]
    ]
    for kind, values in HOSTILE.items():
        same = [(location, name) for location, name, k in fields if k == kind]
        if len(same) > 1:
            out += [dict.fromkeys(same, v) for v in values]
    return out


def baseline_body(label: str, world: World) -> dict[str, Any] | None:
    """A body that passes the operation's own checks, so a hostile field is what reaches the
    storage behind; None: use a generated one."""
    n = next(_serial)
    bodies: dict[str, dict[str, Any]] = {
        "POST /api/auth/login": {"email": world.teacher_email, "password": PASSWORD},
        "POST /api/auth/password": {
            "current_password": PASSWORD,
            "new_password": "another horse battery",
        },
        "POST /api/admin/users": {
            "email": f"fuzz-new-{n}@school.example",
            "password": PASSWORD,
            "display_name": "New",
        },
        "POST /api/sessions": {"title": "Maths"},
        "POST /api/join/{code}": {"display_name": "Cy", "consent": True},
        "PUT /api/admin/policy": {},
    }
    return bodies.get(label)


# --- findings and figures ----------------------------------------------------------------------
def _root_cause(tb: str | None) -> str:
    """The innermost frame of our code and the exception line of a server traceback."""
    if not tb:
        return ""
    lines = tb.strip().splitlines()
    ours = [
        ln.strip()
        for ln in lines
        if ln.strip().startswith('File "') and str(REPO_ROOT) in ln and ".venv" not in ln
    ]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
    return " | ".join(([ours[-1]] if ours else []) + ([errors[-1][:300]] if errors else []))


@dataclass
class Finding:
    check: str
    identity: str
    operation: str
    mode: str
    status: int | None
    title: str
    message: str
    curl: str
    server_traceback: str | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Same check, operation, status, title and server-side cause: the same bug, whoever
        sent it."""
        return (
            self.check,
            self.operation,
            self.status,
            self.title,
            _root_cause(self.server_traceback),
        )

    def describe(self) -> str:
        out = (
            f"[{self.check}] {self.operation} as {self.identity} ({self.mode}): "
            f"{self.status} {self.title}\n{self.message.strip()}\n{self.curl}"
        )
        if self.server_traceback:
            out += "\nserver: " + _root_cause(self.server_traceback)
        return out


@dataclass
class Figures:
    operations: set[str] = field(default_factory=set)
    cases: int = 0
    cases_by_identity: Counter[str] = field(default_factory=Counter)
    cases_by_mode: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # check -> failing responses
    findings: dict[tuple, Finding] = field(default_factory=dict)  # deduplicated
    notes: list[str] = field(default_factory=list)  # generation trouble, not API failures
    no_negative_data: set[str] = field(default_factory=set)  # operations where none exists
    skipped_for_time: int = 0
    seconds: float = 0.0

    def distinct_by_check(self) -> Counter[str]:
        return Counter(f.check for f in self.findings.values())

    def summary(self) -> str:
        def counts(c: Counter) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

        lines = [
            f"operations fuzzed: {len(self.operations)}",
            f"cases: {self.cases} (by identity: {counts(self.cases_by_identity)}; "
            f"by mode: {counts(self.cases_by_mode)})",
            f"statuses: {counts(self.statuses)}",
            f"failing responses per check: {counts(self.failures)}",
            f"distinct failures per check: {counts(self.distinct_by_check())}",
            f"wall time: {self.seconds:.1f} s"
            + (
                f" (time bound hit: {self.skipped_for_time} cases skipped)"
                if self.skipped_for_time
                else ""
            ),
        ]
        if self.no_negative_data:
            lines.append(
                "no negative data possible (free-string path parameters only): "
                + ", ".join(sorted(self.no_negative_data))
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def report(self) -> str:
        return "\n\n".join(f.describe() for f in self.findings.values())


# --- the run -----------------------------------------------------------------------------------
class Fuzzer:
    def __init__(
        self,
        settings: Settings,
        base_url: str,
        server_errors: _Tracebacks,
        *,
        examples: int = 10,
        hostile_examples: int = 2,
        seconds: float = 600.0,
        checks: dict[str, Callable] | None = None,
        modes: tuple[GenerationMode, ...] = MODES,
        request_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self.server_errors = server_errors
        self.examples = examples
        self.hostile_examples = hostile_examples
        self.seconds = seconds
        self.checks = checks or GATING_CHECKS
        self.modes = modes
        self.request_timeout = request_timeout
        self.http = requests.Session()
        self.engine = make_engine(settings.database_url or "")
        self.redis = redis.Redis.from_url(settings.redis_url or "")
        self.raw = self.http.get(f"{base_url}/openapi.json", timeout=30).json()
        self.schema = schemathesis.openapi.from_dict(self.raw)
        self.schema.config.output.sanitization.enabled = False  # curl lines show what was sent
        self.figures = Figures()

    def close(self) -> None:
        self.http.close()
        self.engine.dispose()
        self.redis.close()

    def operations(self, only: str | None = None) -> list[Any]:
        ops = []
        for result in self.schema.get_all_operations():
            if isinstance(result, Err):  # an operation Schemathesis cannot read is a finding too
                raise result.err()
            ops.append(result.ok())
        return [op for op in ops if only is None or only in op.label]

    def run(self, identities: tuple[str, ...] = IDENTITIES, only: str | None = None) -> Figures:
        started = time.monotonic()
        stop_at = started + self.seconds
        # /readyz wants a live inference worker; a heartbeat stands in for one.
        self.redis.set(contracts.WORKER_HEARTBEAT_PREFIX + "fuzz", "1", ex=3600)
        components = self.raw.get("components", {}).get("schemas", {})
        for op in self.operations(only):
            raw_op = self.raw["paths"][op.path][op.method.lower()]
            for identity in identities:
                world = make_world(self.settings, self.base_url, self.http, self.engine)
                headers = world.headers[identity]
                for mode in self.modes:
                    strategy = self._strategy(op, mode, world)
                    if strategy is not None:
                        self._fuzz(
                            op, mode.value, identity, headers, strategy, self.examples, stop_at
                        )
                for target in hostile_targets(raw_op, components):
                    strategy = self._hostile(op, world, target)
                    self._fuzz(
                        op, "hostile", identity, headers, strategy, self.hostile_examples, stop_at
                    )
        self.figures.seconds = time.monotonic() - started
        return self.figures

    def _strategy(self, op: Any, mode: GenerationMode, world: World) -> Any:
        generated = [op.query, op.body, op.headers, op.cookies]
        if not op.path_parameters and not any(generated):
            # Nothing to vary: one request is the whole story (and negative data is impossible).
            return (
                op.as_strategy(GenerationMode.POSITIVE) if mode is GenerationMode.POSITIVE else None
            )
        names = [p.name for p in op.path_parameters]
        known = {n: st.sampled_from(world.known[n]) for n in names if n in world.known}
        strategies = [op.as_strategy(mode)]
        # Real ids with generated everything else: the negative mode needs something left to break.
        if known and (mode is GenerationMode.POSITIVE or any(generated)):
            strategies.append(
                st.fixed_dictionaries(known).flatmap(
                    lambda pp: op.as_strategy(mode, path_parameters=pp)
                )
            )
        return st.one_of(*strategies)

    def _hostile(self, op: Any, world: World, target: Target) -> Any:
        """Cases with the target's values, real ids in the rest of the path and a body that
        passes the operation's own checks where one is known."""
        path = {p.name: world.known[p.name][0] for p in op.path_parameters if p.name in world.known}
        path.update({name: v for (location, name), v in target.items() if location == "path"})
        query = {name: v for (location, name), v in target.items() if location == "query"}
        fields = {name: v for (location, name), v in target.items() if location == "body"}
        kwargs: dict[str, Any] = {}
        if path:
            kwargs["path_parameters"] = path
        if query:
            kwargs["query"] = query
        strategy = op.as_strategy(GenerationMode.POSITIVE, **kwargs)
        if not fields and baseline_body(op.label, world) is None:
            return strategy

        def poison(case: Any) -> Any:
            body = baseline_body(op.label, world)
            if body is None:
                body = case.body if isinstance(case.body, dict) else {}
            case.body = {**body, **fields}
            return case

        return strategy.map(poison)

    def _fuzz(
        self,
        op: Any,
        mode: str,
        identity: str,
        headers: dict[str, str],
        strategy: Any,
        examples: int,
        stop_at: float,
    ) -> None:
        figures = self.figures

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,  # the same cases every run: CI failures reproduce
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=hypothesis.Verbosity.quiet,
        )
        @hypothesis.given(case=strategy)
        def one(case: Any) -> None:
            if time.monotonic() > stop_at:
                figures.skipped_for_time += 1
                return
            figures.operations.add(op.label)
            figures.cases += 1
            figures.cases_by_identity[identity] += 1
            figures.cases_by_mode[mode] += 1
            self.server_errors.take()
            try:
                response = case.call(
                    base_url=self.base_url,
                    session=self.http,
                    headers=headers,
                    timeout=self.request_timeout,
                )
            except Exception as exc:  # a timeout or a dropped connection is a finding too
                self._record("transport", identity, op, mode, None, exc, case, None)
                return
            status = response.status_code
            figures.statuses[status] += 1
            try:
                case.validate_response(response, checks=list(self.checks.values()), headers=headers)
            except FailureGroup as group:
                tb = self._server_traceback() if status >= 500 else None
                for failure in group.exceptions:
                    check = failure.checks[0] if failure.checks else type(failure).__name__
                    name = getattr(check, "__name__", check)
                    if name == "not_a_server_error" and (op.label, status) in EXPECTED_5XX:
                        continue
                    self._record(check, identity, op, mode, status, failure, case, tb)

        try:
            one()
        except hypothesis.errors.Unsatisfiable:
            # Negative data for an operation whose only parameters are free strings in the path:
            # every string is valid there, so there is none to make.
            figures.no_negative_data.add(op.label)
        except hypothesis.errors.HypothesisException as exc:
            figures.notes.append(f"{op.label} as {identity} ({mode}): {type(exc).__name__}: {exc}")

    def _server_traceback(self) -> str | None:
        """The traceback of the request that just failed with a 5xx, if the server raised."""
        for _ in range(100):  # uvicorn logs the exception after the 500 has gone out
            tracebacks = self.server_errors.take()
            if tracebacks:
                return tracebacks[-1]
            time.sleep(0.01)
        return None  # a 5xx the app answered on purpose (503 from a dependency, say)

    def _record(
        self,
        check: str,
        identity: str,
        op: Any,
        mode: str,
        status: int | None,
        exc: BaseException,
        case: Any,
        server_traceback: str | None,
    ) -> None:
        if isinstance(exc, Failure):
            title, message = exc.title, exc.message
        else:
            title, message = type(exc).__name__, str(exc)
        try:  # without the identity's token: "as admin" says whose to add
            curl = case.as_curl_command(base_url=self.base_url)
        except Exception as err:  # a case the curl renderer cannot show must not hide the finding
            curl = f"(no curl: {err!r}) {case!r}"
        finding = Finding(
            check=check,
            identity=identity,
            operation=op.label,
            mode=mode,
            status=status,
            title=title,
            message=message[:2000],
            curl=curl[:2000],
            server_traceback=server_traceback,
        )
        self.figures.failures[check] += 1
        self.figures.findings.setdefault(finding.key, finding)


@contextmanager
def fuzzer(settings: Settings, **kwargs: Any) -> Iterator[Fuzzer]:
    """A running gateway on ``settings`` (generous limits) and a Fuzzer pointed at it."""
    settings = with_generous_limits(settings)
    with serve(settings) as (base_url, errors):
        f = Fuzzer(settings, base_url, errors, **kwargs)
        try:
            yield f
        finally:
            f.close()
