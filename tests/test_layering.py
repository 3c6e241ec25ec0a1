"""The floors of the codebase, read from every module's imports (top level and inside functions):
the shared core imports no floor above it, the gateway, the inference worker and the aggregator
never import one another, and routes never import routes. docs/architecture.md draws the same
picture."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from classpulse.settings import REPO_ROOT

PACKAGES = ("classpulse", "app", "worker", "aggregator", "records", "training")
# What each package (or part of one) may import of the others, besides itself. The CLI is the
# top floor: it starts every process, so it may import everything (inside its commands).
ALLOWED: dict[str, set[str]] = {
    "classpulse": set(),
    "classpulse.cli": {"app", "worker", "aggregator", "records", "training"},
    "records": {"classpulse"},
    "app": {"classpulse", "records"},
    # One package per process: what the worker and the aggregator share is in the core
    # (classpulse/consumer.py, classpulse/streams.py), so neither needs the other.
    "worker": {"classpulse"},
    "aggregator": {"classpulse", "records"},
    # Evaluation on faces runs the service's own path (detector → crop → classifier), so what
    # it measures is what the workers would do.
    "training": {"classpulse", "worker"},
}
# Libraries a floor must not touch at all (the gateway decodes no image and runs no model; the
# worker serves no HTTP and has no database; the aggregator runs no model and serves no HTTP).
FORBIDDEN_LIBS = {
    "app": {"cv2", "onnxruntime", "torch"},
    "worker": {"fastapi", "starlette", "uvicorn", "torch", "sqlalchemy", "psycopg", "alembic"},
    "aggregator": {"cv2", "onnxruntime", "fastapi", "starlette", "uvicorn", "torch"},
    "classpulse": {"fastapi", "starlette", "cv2", "onnxruntime", "torch"},
    "records": {"fastapi", "starlette", "cv2", "onnxruntime", "torch"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _floor(module: str) -> str:
    return "classpulse.cli" if module.startswith("classpulse.cli") else module.split(".")[0]


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_stay_on_their_floor(module):
    floor = _floor(module)
    own = floor.split(".")[0]
    allowed = ALLOWED[floor] | {own}
    imported = _imports(MODULES[module])
    upward = sorted(
        i for i in imported if i.split(".")[0] in PACKAGES and i.split(".")[0] not in allowed
    )
    assert not upward, f"{module} imports {upward}"
    libs = sorted(i for i in imported if i.split(".")[0] in FORBIDDEN_LIBS.get(own, set()))
    assert not libs, f"{module} imports {libs}"


def test_routes_never_import_routes():
    routes = {m for m in MODULES if m.startswith("app.routes.")}
    offenders = {
        m: sorted(i for i in _imports(MODULES[m]) if i.startswith("app.routes")) for m in routes
    }
    assert not {m: i for m, i in offenders.items() if i}, "shared helpers belong in app/ services"


def test_the_foundation_holds_only_shared_modules():
    """Nothing in classpulse/ (outside the CLI) imports app, worker, aggregator, records or
    training."""
    core = [m for m in MODULES if _floor(m) == "classpulse"]
    assert len(core) >= 10
    for module in core:
        up = [i for i in _imports(MODULES[module]) if i.split(".")[0] in PACKAGES[1:]]
        assert not up, (module, up)


def test_the_slow_list_names_tests_that_exist():
    """tests/conftest.py SLOW names modules and tests by name: a renamed one would silently
    join the fast tier."""
    from tests.conftest import SLOW

    tests_dir = REPO_ROOT / "tests"
    for key in SLOW:
        module, _, test = key.partition("::")
        path = tests_dir / f"{module}.py"
        assert path.exists(), f"SLOW names {module}, which is not in tests/"
        if test:
            names = {
                n.name
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert test in names, f"SLOW names {key}, but {module} has no test {test}"


def test_test_modules_never_import_test_modules():
    """What several test modules share lives in a helper module (tests/*_helpers.py,
    tests/browser.py...), never in a test_*.py that others import: importing one runs its
    module-level code and fixtures in another module, and ties two tests' files together."""
    offenders = {}
    for path in sorted([*(REPO_ROOT / "tests").glob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]):
        tree = ast.parse(path.read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("tests.test_")}
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                if module.startswith(("tests.test_", ".test_")):
                    found.add(module)
                elif module in ("tests", "."):
                    found |= {f"tests.{a.name}" for a in node.names if a.name.startswith("test_")}
        if found:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(found)
    assert not offenders, f"test modules imported as helpers (move what they share): {offenders}"
