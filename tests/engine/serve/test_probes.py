"""/health, /ready, /v1/models and /metrics (Prometheus text, parsed with prometheus_client)."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families


def _metrics(server) -> dict:
    text = httpx.get(server.url + "/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_health_ready_models(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "draining": False, "streams": 0}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "models": ["tiny"]}
    (model,) = httpx.get(server.url + "/v1/models").json()["data"]
    assert model["id"] == "tiny" and model["object"] == "model" and model["sample_rate"] == 24_000
    assert model["max_streams"] == server.engine.slots and "default" in model["voices"]


def test_metrics_count_what_was_served(server):
    before = _metrics(server)
    body = {"model": "tiny", "input": "Counting this one.", "voice": "default", "response_format": "pcm", "seed": 0}
    r = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200
    assert httpx.post(server.url + "/v1/audio/speech", json={**body, "model": "nope"}).status_code == 404
    after = _metrics(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("cadenza_ttfa_seconds_count", model="tiny", endpoint="speech") == 1
    assert delta("cadenza_inter_chunk_gap_seconds_count", model="tiny") >= 1
    audio_s = len(r.content) / 2 / 24_000
    assert abs(delta("cadenza_audio_seconds_total", model="tiny") - audio_s) < 1e-6
    assert delta("cadenza_streams_total", model="tiny", endpoint="speech", outcome="ok") == 1
    assert delta("cadenza_errors_total", type="model_not_found") == 1
    assert after[("cadenza_active_streams", (("model", "tiny"),))] == 0
    assert after[("cadenza_queue_depth", (("model", "tiny"),))] == 0
    assert after[("cadenza_underruns_total", (("model", "tiny"),))] >= 0  # exported from the start


def test_ready_waits_for_the_models_to_load(tiny_bundle):
    """create_app(bundles=...) loads on a thread: /health answers at once, /ready once loaded."""
    from cadenza.engine.serve.app import create_app
    from serve_support import LiveServer

    app = create_app(bundles={"t": tiny_bundle}, engine_kwargs={"threads": 1, "max_streams": 2})
    srv = LiveServer(app)
    try:
        assert httpx.get(srv.url + "/health").status_code == 200
        models = app.state.cadenza.models
        assert models.wait(60)
        assert httpx.get(srv.url + "/ready").json() == {"status": "ready", "models": ["t"]}
        r = httpx.post(srv.url + "/v1/audio/speech", timeout=60,
                       json={"model": "t", "input": "Loaded.", "voice": "default", "response_format": "pcm"})
        assert r.status_code == 200
    finally:
        srv.stop()
    assert not models.owned  # the app closed the engines it loaded


def test_wait_loaded_startup_returns_once_loaded_and_fails_on_a_bad_bundle(tiny_bundle, tmp_path):
    """create_app(wait_loaded=True): the lifespan's startup ends with the engines loaded (a replica
    behind a router is ready only when it can serve), or fails with the loading error."""
    import shutil

    from starlette.testclient import TestClient

    from cadenza.engine.serve.app import create_app

    app = create_app(bundles={"t": tiny_bundle}, engine_kwargs={"threads": 1, "max_streams": 2}, wait_loaded=True)
    with TestClient(app) as client:
        assert app.state.cadenza.models.ready
        assert client.get("/ready").json() == {"status": "ready", "models": ["t"]}
    assert not app.state.cadenza.models.owned

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    next(bad.glob("*.onnx")).write_bytes(b"not a graph")  # its hash no longer matches the manifest
    app = create_app(bundles={"t": bad}, engine_kwargs={"threads": 1}, wait_loaded=True)
    with pytest.raises(RuntimeError, match="loading the models failed: BundleError"):
        with TestClient(app):
            pass
