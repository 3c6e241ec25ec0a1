"""Health, readiness and metrics endpoints, and the gateway's import boundary."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from classpulse import contracts
from classpulse.settings import REPO_ROOT
from tests.test_gateway_helpers import client_for


def test_health_and_readiness(settings, clean_redis):
    with client_for(settings) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "not ready", "database": "ok", "redis": "ok", "workers": 0}
        clean_redis.set(contracts.WORKER_HEARTBEAT_PREFIX + "w1", "1", ex=contracts.HEARTBEAT_TTL_S)
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["workers"] == 1


def test_readyz_reports_a_dead_database(settings):
    broken = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/none"})
    with client_for(broken) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["database"] == "unavailable"


def test_metrics_include_pipeline_counters(settings, clean_redis):
    clean_redis.hset(contracts.STATS_KEY, mapping={"worker.processed": 42, "aggregator.buckets": 7})
    with client_for(settings) as client:
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert 'classpulse_pipeline_total{counter="worker.processed"} 42.0' in text
        assert 'classpulse_pipeline_total{counter="aggregator.buckets"} 7.0' in text
        assert 'classpulse_frames_dropped_total{reason="not_jpeg"} 0.0' in text
        assert 'classpulse_websockets{kind="student"} 0.0' in text


def test_gateway_never_imports_cv2_or_onnxruntime(settings):
    """In a clean interpreter: import the app, build it and run its lifespan."""
    code = textwrap.dedent(
        """
        import sys
        from fastapi.testclient import TestClient
        from app.main import create_app, run_gateway
        from classpulse.settings import Settings
        import os
        app = create_app(Settings(env="test", database_url=os.environ["DB"], redis_url=os.environ["RDS"]))
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("cv2", "onnxruntime", "worker", "torch"))
        print("forbidden:", bad)
        sys.exit(1 if bad else 0)
        """
    )
    env = {**os.environ, "DB": settings.database_url, "RDS": settings.redis_url}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
