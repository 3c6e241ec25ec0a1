"""Reproducible builds: the lock files under requirements/ (made by scripts/lock) pin every package
with its hashes, cover what pyproject.toml asks for at versions it allows, and are what the
Dockerfile and scripts/bootstrap install."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQS = ROOT / "requirements"
LOCKS = ("runtime", "dev", "gpu", "tools")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
# Python the lock was resolved for (scripts/lock): gpu.lock is for the CUDA image's Python 3.12.
PYTHON = {"runtime": "3.11", "dev": "3.11", "gpu": "3.12", "tools": "3.11"}
# Never locked: pip takes torch==2.13.0 from a CPU build on the machine's disk, whose hashes are
# not PyPI's (docs/deploy.md); scripts/bootstrap installs it after the lock.
NOT_LOCKED = {"torch"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}\s*\\?$")


@dataclass
class Pin:
    version: Version
    marker: str | None
    hashes: list[str] = field(default_factory=list)


def parse_lock(name: str) -> dict[str, Pin]:
    """A `uv pip compile --generate-hashes` file: ``name==version [; marker] \\`` then one
    ``--hash=sha256:…`` line each; comments and annotations between."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for n, raw in enumerate((REQS / f"{name}.lock").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            assert current is not None and _HASH.match(line), f"{name}.lock:{n}: {raw}"
            current.hashes.append(line)
            continue
        m = _PIN.match(line)
        assert m, f"{name}.lock:{n}: not an exact pin (no URLs, paths, -e or options): {raw}"
        key = canonicalize_name(m.group(1))
        assert key not in pins, f"{name}.lock: {key} pinned twice"
        current = pins[key] = Pin(Version(m.group(2)), m.group(3))
    return pins


@pytest.fixture(scope="module")
def locks() -> dict[str, dict[str, Pin]]:
    return {name: parse_lock(name) for name in LOCKS}


def applies(pin_or_req: Pin | Requirement, python: str) -> bool:
    marker = pin_or_req.marker
    if marker is None:
        return True
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux"}
    env |= {"platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
    return (marker if isinstance(marker, Marker) else Marker(marker)).evaluate(env | {"extra": ""})


def assert_covered(requirements: list[str], lock: str, pins: dict[str, Pin]) -> None:
    for spec in requirements:
        req = Requirement(spec)
        key = canonicalize_name(req.name)
        if key in NOT_LOCKED or not applies(req, PYTHON[lock]):
            continue
        assert key in pins, f"{lock}.lock lacks {spec!r}: run scripts/lock"
        version = pins[key].version
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock}.lock pins {key}=={version}, outside pyproject.toml's {spec!r}: run scripts/lock"
        )


def test_every_pin_has_hashes(locks):
    for name, pins in locks.items():
        assert pins, f"{name}.lock is empty"
        for key, pin in pins.items():
            assert pin.hashes, f"{name}.lock: {key}=={pin.version} has no --hash"


def test_runtime_lock_covers_the_dependencies(locks):
    assert_covered(PROJECT["dependencies"], "runtime", locks["runtime"])


def test_dev_lock_covers_runtime_dev_and_train_without_torch(locks):
    extras = PROJECT["optional-dependencies"]
    assert_covered(PROJECT["dependencies"] + extras["dev"] + extras["train"], "dev", locks["dev"])
    # The runtime packages at the very same versions: tests run what the image ships.
    for key, pin in locks["runtime"].items():
        assert locks["dev"][key].version == pin.version, key
    for name in LOCKS:
        assert not NOT_LOCKED & set(locks[name]), f"{name}.lock pins torch: its hashes would differ"
    assert not any(k.startswith("nvidia-") for k in locks["dev"]), "a CUDA torch crept in"


def test_gpu_lock_swaps_onnxruntime_for_onnxruntime_gpu(locks):
    gpu = locks["gpu"]
    deps = [d for d in PROJECT["dependencies"] if Requirement(d).name != "onnxruntime"]
    assert_covered(deps + PROJECT["optional-dependencies"]["gpu"], "gpu", gpu)
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu  # both would own onnxruntime/


def test_lock_tool_is_pinned():
    uv = re.search(r"^UV_VERSION=(\S+)", (ROOT / "scripts" / "lock").read_text(), re.M)
    assert uv, "scripts/lock names the uv version it runs"
    assert parse_lock("tools")["uv"].version == Version(uv.group(1))
    for name in ("runtime", "dev", "gpu"):
        head = (REQS / f"{name}.lock").read_text().splitlines()[:2]
        assert head[1].strip() == "#    scripts/lock", f"{name}.lock was not made by scripts/lock"


def _stages(dockerfile: str) -> list[str]:
    return re.split(r"^FROM\s", dockerfile, flags=re.M)[1:]


def test_dockerfile_installs_from_the_lock():
    text = (ROOT / "Dockerfile").read_text()
    stages = _stages(text)
    assert len(stages) == 2, "a builder stage and a runtime stage"
    builder, runtime = stages
    assert " AS builder" in builder.splitlines()[0] and " AS runtime" in runtime.splitlines()[0]
    for lock in ("requirements/runtime.lock", "requirements/gpu.lock"):
        assert lock in builder
    installs = [line for line in builder.splitlines() if "pip install" in line]
    assert installs and all("--require-hashes" in line for line in installs), installs
    # The runtime stage installs nothing with pip and carries no build tools.
    assert "pip install" not in runtime
    for tool in ("gcc", "build-essential", "python3-dev", "python3-venv"):
        assert tool not in runtime, tool
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    # The CPU and GPU builds both still work by build argument.
    assert "ARG BASE_IMAGE=" in text and "ARG ONNXRUNTIME=" in builder
    assert re.search(r"^USER 10001", runtime, re.M), "numeric, for runAsNonRoot"


def test_bootstrap_installs_from_the_lock():
    text = (ROOT / "scripts" / "bootstrap").read_text()
    assert "--require-hashes" in text and "--no-deps -e ." in text
    stamp = next(line for line in text.splitlines() if line.startswith("hash="))
    for part in ("pyproject.toml", "requirements/runtime.lock", "requirements/dev.lock"):
        assert part in stamp, f"the stamp must change when {part} does"
