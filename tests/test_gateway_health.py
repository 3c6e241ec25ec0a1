"""Health, readiness and metrics endpoints, and the gateway's import boundary."""

from __future__ import annotations

from classpulse import contracts
from tests.gateway_helpers import client_for


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
