"""The soak load test: bounded, loopback only, and it measures what it says (short runs)."""
from __future__ import annotations

import pytest

from cadenza.benchmarks import soak


@pytest.mark.parametrize("argv", [["--url", "http://10.0.0.1:8000"], ["--url", "http://example.com"],
                                  ["--url", "http://127.0.0.1:1", "--clients", "1000"],
                                  ["--url", "http://127.0.0.1:1", "--seconds", "99999"]])
def test_refuses_remote_hosts_and_unbounded_runs(argv):
    with pytest.raises(SystemExit) as e:
        soak.main(argv)
    assert e.value.code == 2


def test_a_short_run_over_http_and_in_process(tiny_bundle):
    pytest.importorskip("uvicorn")
    from cadenza.engine import Engine
    from cadenza.engine.serve.app import create_app
    from serve_support import LiveServer

    with Engine.load(tiny_bundle, threads=1, max_streams=4) as engine:
        srv = LiveServer(create_app({"tiny": engine}), engine)
        try:
            import asyncio

            r = asyncio.run(soak.over_http(srv.url, clients=2, seconds=1.5, headers={}))
        finally:
            srv.stop()
    assert r["requests_ok"] >= 2 and not r["errors"]
    assert 0 < r["ttfa_ms"]["p50"] <= r["ttfa_ms"]["p99"]
    assert r["server_rss_mib"]["max"] > 10  # read from the server's /metrics
    local = soak.in_process(str(tiny_bundle), clients=2, seconds=1.0, threads=1)
    assert local["requests_ok"] >= 2 and local["audio_s"] > 0 and local["ttfa_ms"]["p50"] > 0


def test_client_side_underruns_follow_real_time_playback():
    t = soak.Tally()
    t.playback([(0.0, 1.0), (0.5, 1.0), (3.0, 1.0), (3.2, 0.5)])  # audio ran out at 2.0; the third came at 3.0
    assert (t.underruns, t.streams_with_underruns, round(t.stall_s, 6)) == (1, 1, 1.0)
    t.playback([(0.0, 0.1), (0.05, 0.1), (0.1, 0.1)])  # always ahead
    assert (t.underruns, t.streams_with_underruns) == (1, 1)
