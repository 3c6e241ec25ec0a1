"""docker-compose.yml (and the GPU override) as Compose reads it: the YAML with its anchors and
merge keys, then `${VAR}` interpolated the way Compose does (`:-` defaults, `:?` required
variables). No Docker engine or compose plugin where these tests run, so `docker compose config`
cannot; what it would check, and what matters for a safe deployment, is checked here: only the
proxy is published, the gateway believes forwarded headers from the proxy's fixed address alone,
Redis requires its password and every client has it, the signing key reaches the gateway alone,
the back-end network has no way out, and the real Caddy accepts the committed Caddyfile with the
environment the proxy service gives it."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from classpulse.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
GPU = ROOT / "docker-compose.gpu.yml"
ENV = {
    "CLASSPULSE_DOMAIN": "pulse.school.example",
    "CLASSPULSE_SECRET_KEY": "s" * 64,
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "REDIS_PASSWORD": "fedcba9876543210fedcba9876543210fedcba98",
}
SERVICES = {"proxy", "postgres", "redis", "migrate", "gateway", "worker", "aggregator"}
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\})")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string value (not keys): ``$$`` is a dollar, ``${V}``,
    ``${V:-default}`` / ``${V-default}``, ``${V:?error}`` / ``${V?error}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name, op, arg = m.group(2), m.group(3), m.group(4) or ""
        unset = name not in env or (op is not None and op.startswith(":") and env[name] == "")
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset:
            return interpolate(arg, env)
        return env.get(name, "")

    return _VAR.sub(one, value)


def load(env: dict[str, str] = ENV, *files: Path) -> dict[str, Any]:
    """The files merged as `docker compose -f A -f B` does for what they set here."""
    merged: dict[str, Any] = {}
    for path in files or (COMPOSE,):
        doc = interpolate(yaml.safe_load(path.read_text()), env)
        for name, service in doc.get("services", {}).items():
            base = merged.setdefault("services", {}).setdefault(name, {})
            for key, value in service.items():
                if isinstance(value, dict) and isinstance(base.get(key), dict):
                    base[key] = {**base[key], **value}
                else:
                    base[key] = value
        for key in ("networks", "volumes"):
            merged.setdefault(key, {}).update(doc.get(key) or {})
    return merged


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def test_services_and_settings(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith("CLASSPULSE_") and name != "proxy":
                assert key[len("CLASSPULSE_") :].lower() in Settings.model_fields, (name, key)
    for name in ("migrate", "gateway", "worker", "aggregator"):
        service = services[name]
        assert service["image"] == "classpulse:latest" and service["read_only"] is True
        assert env_of(service)["CLASSPULSE_ENV"] == "production"


@pytest.mark.parametrize("missing", sorted(ENV))
def test_required_variables_fail_loudly(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        load(env)


def test_only_the_proxy_is_published(compose):
    services = compose["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    assert sorted(services["proxy"]["ports"]) == ["443:443", "443:443/udp", "80:80"]
    assert services["proxy"]["image"].startswith("caddy:2")
    # The back end has no route out; only the proxy is also on the outside network.
    networks = compose["networks"]
    assert networks["backend"]["internal"] is True
    for name, service in services.items():
        attached = service["networks"]
        attached = set(attached) if isinstance(attached, (dict, list)) else set()
        assert attached == ({"edge", "backend"} if name == "proxy" else {"backend"}), name


def test_the_gateway_trusts_the_proxy_address_alone(compose):
    services = compose["services"]
    proxy_ip = services["proxy"]["networks"]["backend"]["ipv4_address"]
    trusted = env_of(services["gateway"])["CLASSPULSE_FORWARDED_ALLOW_IPS"]
    assert trusted == proxy_ip, "only the proxy's fixed address"
    address = ipaddress.ip_address(trusted)  # one address: not a range, not "*"
    (subnet,) = compose["networks"]["backend"]["ipam"]["config"]
    assert address in ipaddress.ip_network(subnet["subnet"])
    # ...and the proxy's address moves with the variable that sets both.
    moved = load({**ENV, "CLASSPULSE_PROXY_IP": "10.9.8.7"})["services"]
    assert env_of(moved["gateway"])["CLASSPULSE_FORWARDED_ALLOW_IPS"] == "10.9.8.7"
    assert moved["proxy"]["networks"]["backend"]["ipv4_address"] == "10.9.8.7"
    # The links it builds: the proxy's HTTPS name (it also believes the proxy's X-Forwarded-Proto).
    assert env_of(services["gateway"])["CLASSPULSE_PUBLIC_URL"] == "https://pulse.school.example"
    assert env_of(services["proxy"])["CLASSPULSE_UPSTREAM"] == "gateway:8000"
    assert "8000" in [str(p) for p in services["gateway"].get("expose", [])]


def test_redis_requires_its_password_and_keeps_its_aof(compose):
    services = compose["services"]
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--requirepass"] == ENV["REDIS_PASSWORD"]
    assert flags["--appendonly"] == "yes"  # results survive a restart
    # The healthcheck authenticates and looks for the PONG (NOAUTH also exits 0).
    assert env_of(services["redis"])["REDISCLI_AUTH"] == ENV["REDIS_PASSWORD"]
    assert "PONG" in " ".join(services["redis"]["healthcheck"]["test"])
    clients = {n for n, s in services.items() if "CLASSPULSE_REDIS_URL" in env_of(s)}
    assert clients == {"gateway", "worker", "aggregator"}
    for name in clients:
        url = urlsplit(env_of(services[name])["CLASSPULSE_REDIS_URL"])
        assert (url.hostname, url.port, url.password) == ("redis", 6379, ENV["REDIS_PASSWORD"])


def test_each_secret_reaches_only_the_processes_that_use_it(compose):
    services = compose["services"]
    holders = {
        secret: {n for n, s in services.items() if value in json.dumps(s)}
        for secret, value in ENV.items()
        if secret != "CLASSPULSE_DOMAIN"
    }
    assert holders == {
        # Signs and verifies every token: the gateway alone (the worker decodes untrusted
        # images; nothing but the gateway signs).
        "CLASSPULSE_SECRET_KEY": {"gateway"},
        "POSTGRES_PASSWORD": {"postgres", "migrate", "gateway", "aggregator"},
        "REDIS_PASSWORD": {"redis", "gateway", "worker", "aggregator"},
    }
    # The GPU override adds nothing of the kind to its workers.
    gpu = load(ENV, COMPOSE, GPU)["services"]["worker"]
    assert set(env_of(gpu)) - set(env_of(services["worker"])) == {
        "CLASSPULSE_PROVIDERS",
        "CLASSPULSE_REQUIRE_GPU",
        "CLASSPULSE_WORKER_BATCH_SIZE",
    }
    assert ENV["CLASSPULSE_SECRET_KEY"] not in json.dumps(gpu)


def test_the_proxy_runs_the_committed_caddyfile(compose):
    proxy = compose["services"]["proxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert (ROOT / mounts["/etc/caddy/Caddyfile"]).resolve() == ROOT / "deploy/caddy/Caddyfile"
    assert {"/data", "/config"} <= set(mounts)  # certificates and the CA survive a restart
    caddy = shutil.which("caddy")
    assert caddy, "caddy is not installed: scripts/test installs Debian's caddy"
    for tls in ("acme", "internal"):
        env = {**env_of(proxy), "CLASSPULSE_TLS": tls, "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [caddy, "adapt", "--config", mounts["/etc/caddy/Caddyfile"], "--adapter", "caddyfile"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        config = json.loads(out.stdout)
        (server,) = config["apps"]["http"]["servers"].values()
        assert server["listen"] == [":443"]
        (route,) = server["routes"]
        assert route["match"] == [{"host": ["pulse.school.example"]}]
        block, proxy_route = route["handle"][0]["routes"]
        assert block["handle"] == [{"handler": "static_response", "status_code": 404}]
        assert "/metrics" in block["match"][0]["path"] and "/docs" in block["match"][0]["path"]
        (handler,) = proxy_route["handle"]
        assert handler["handler"] == "reverse_proxy"
        assert handler["upstreams"] == [{"dial": "gateway:8000"}]
        # Caddy sets X-Forwarded-For itself and trusts no client's (no trusted_proxies).
        assert "trusted_proxies" not in handler
        policies = config["apps"].get("tls", {}).get("automation", {}).get("policies", [])
        issuers = [i["module"] for p in policies for i in p.get("issuers", [])]
        assert issuers == (["internal"] if tls == "internal" else [])  # [] : ACME, automatic
