"""Load test of `cadenza serve` (loopback only), or the same load on an engine in process.

    python -m cadenza.benchmarks.soak --url http://127.0.0.1:8000 --clients 16 --seconds 60
    python -m cadenza.benchmarks.soak --bundle bundles/tiny --clients 16 --seconds 60   # in process

The URL may be Ray Serve's proxy in front of `cadenza serve --ray` replicas: the
responses name their replica (`X-Cadenza-Replica`), so the result counts requests
per replica and keeps each replica's RSS (each `/metrics` answers for one replica).

Each client loops for `--seconds`: one streamed `/v1/audio/speech` request (pcm) after
another, timing the first audio bytes (client-side TTFA, from sending the request), the
gaps between received pieces, and underruns (the audio received, played in real time from
its first piece, runs out before the next piece arrives). A sampler reads the server's RSS from `/metrics`
(`process_resident_memory_bytes`) every second. In process, each client is a thread
iterating `engine.stream`, timed by the stream's own metrics (TTFA from the `stream()`
call). Server overhead = client-side TTFA minus in-process TTFA, same bundle and load.

Bounded: at most 256 clients and one hour; the URL must be a loopback address.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from urllib.parse import urlparse

from cadenza.engine.runtime.metrics import percentile

TEXT = "Hello there, this is a load test of the streaming speech server, one sentence at a time."
MAX_CLIENTS, MAX_SECONDS = 256, 3600
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Tally:
    """What the clients measured (seconds)."""

    def __init__(self):
        self.ttfa, self.gaps, self.errors, self.ok, self.audio_s = [], [], {}, 0, 0.0
        self.underruns, self.stall_s, self.streams_with_underruns = 0, 0.0, 0
        self.replicas: dict[str, int] = {}  # X-Cadenza-Replica -> requests served (Ray Serve)
        self.lock = threading.Lock()

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def playback(self, arrivals: list[tuple[float, float]]) -> None:
        """Client-side underruns of one stream: (arrival s, audio s) per piece, played in real time from
        the first piece; a piece that comes after the audio before it has played is an underrun."""
        clock, n = None, 0
        for t, audio in arrivals:
            if clock is not None and t > clock + 1e-3:
                n, self.stall_s = n + 1, self.stall_s + t - clock
                clock = t
            clock = (t if clock is None else clock) + audio
        with self.lock:
            self.underruns += n
            self.streams_with_underruns += n > 0

    def summary(self, seconds: float) -> dict:
        q = lambda xs, p: round(percentile(xs, p) * 1e3, 2) if xs else None  # noqa: E731
        return {"requests_ok": self.ok, "errors": self.errors, "audio_s": round(self.audio_s, 1),
                "x_real_time": round(self.audio_s / seconds, 1),
                "underruns": self.underruns, "streams_with_underruns": self.streams_with_underruns,
                "stall_s": round(self.stall_s, 2),
                "ttfa_ms": {f"p{p}": q(self.ttfa, p) for p in (50, 95, 99)},
                "gap_ms": {**{f"p{p}": q(self.gaps, p) for p in (50, 95, 99)},
                           "max": round(max(self.gaps) * 1e3, 2) if self.gaps else None},
                **({"requests_per_replica": dict(sorted(self.replicas.items()))} if self.replicas else {})}


# --- over HTTP -------------------------------------------------------------------------------
async def _client(client, url: str, model: str, i: int, end: float, tally: Tally, sr: int) -> None:
    n = 0
    while time.perf_counter() < end:
        body = {"model": model, "input": TEXT, "voice": "default", "response_format": "pcm", "seed": i * 100000 + n}
        n += 1
        t0 = last = time.perf_counter()
        got, first, arrivals = 0, True, []
        try:
            async with client.stream("POST", url + "/v1/audio/speech", json=body) as r:
                if r.status_code != 200:
                    await r.aread()
                    tally.error(f"http_{r.status_code}")
                    await asyncio.sleep(0.2)  # as a client honouring Retry-After would, briefly
                    continue
                async for piece in r.aiter_raw():
                    now = time.perf_counter()
                    (tally.ttfa if first else tally.gaps).append(now - (t0 if first else last))
                    first, last, got = False, now, got + len(piece)
                    arrivals.append((now, len(piece) / 2 / sr))
            tally.ok += 1
            tally.audio_s += got / 2 / sr
            tally.playback(arrivals)
            if replica := r.headers.get("x-cadenza-replica"):
                tally.replicas[replica] = tally.replicas.get(replica, 0) + 1
        except Exception as e:  # noqa: BLE001 - counted, the load goes on
            tally.error(type(e).__name__)


async def _rss(client, url: str, end: float, out: list) -> None:
    """(seconds, RSS MiB, replica or None) every second, from the server's `/metrics`."""
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        try:
            r = await client.get(url + "/metrics")
            rss = next(float(line.split()[-1]) for line in r.text.splitlines()
                       if line.startswith("process_resident_memory_bytes"))
            out.append((round(time.perf_counter() - t0, 1), round(rss / 2**20, 1), r.headers.get("x-cadenza-replica")))
        except Exception:  # noqa: BLE001 - a missed sample
            pass
        await asyncio.sleep(1.0)


async def over_http(url: str, clients: int, seconds: float, headers: dict) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=120, headers=headers,
                                 limits=httpx.Limits(max_connections=clients + 2)) as client:
        models = (await client.get(url + "/v1/models")).json()["data"]
        model, sr = models[0]["id"], models[0]["sample_rate"]
        tally, rss = Tally(), []
        t0 = time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(_rss(client, url, end, rss),
                             *[_client(client, url, model, i, end, tally, sr) for i in range(clients)])
        elapsed = time.perf_counter() - t0
    return {"mode": "http", "url": url, "model": model, "clients": clients, "seconds": round(elapsed, 1),
            **tally.summary(elapsed), "server_rss_mib": _rss_summary(rss)}


def _rss_summary(samples: list) -> dict:
    """start / max / end MiB of the server, or of each replica (by `X-Cadenza-Replica`)."""
    def one(mib):
        return {"start": mib[0] if mib else None, "max": max(mib, default=None), "end": mib[-1] if mib else None}

    replicas = sorted({rep for _, _, rep in samples if rep})
    if not replicas:
        return {**one([m for _, m, _ in samples]), "series": [(t, m) for t, m, _ in samples]}
    return {rep: {**one([m for _, m, r in samples if r == rep]), "series": [(t, m) for t, m, r in samples if r == rep]}
            for rep in replicas}


# --- in process --------------------------------------------------------------------------------
def in_process(bundle: str, clients: int, seconds: float, threads: int | None) -> dict:
    from cadenza.engine import Engine

    tally = Tally()
    with Engine.load(bundle, max_streams=clients, threads=threads) as engine:
        end = time.perf_counter() + seconds

        def client(i: int) -> None:
            n = 0
            while time.perf_counter() < end:
                try:
                    s = engine.stream(TEXT, seed=i * 100000 + n)
                    n += 1
                    for _ in s:
                        pass
                except Exception as e:  # noqa: BLE001
                    tally.error(type(e).__name__)
                    continue
                m = s.metrics
                with tally.lock:
                    tally.ok += 1
                    tally.ttfa.append(m.ttfa)
                    tally.gaps += [b - a for a, b in zip(m.arrivals, m.arrivals[1:])]
                    tally.audio_s += m.audio_seconds
                tally.playback([(t, n / engine.sample_rate) for t, n in zip(m.arrivals, m.chunk_samples)])

        t0 = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
    return {"mode": "in-process", "bundle": bundle, "clients": clients, "seconds": round(elapsed, 1),
            **tally.summary(elapsed)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cadenza.benchmarks.soak", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running `cadenza serve` on a loopback address")
    where.add_argument("--bundle", help="run the same load in process on this bundle instead")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--threads", type=int, default=None, help="in process: intra-op threads")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the server's API key")
    p.add_argument("--json", default=None, help="also write the result here")
    a = p.parse_args(argv)
    if not (1 <= a.clients <= MAX_CLIENTS) or not (0 < a.seconds <= MAX_SECONDS):
        p.error(f"--clients must be in [1, {MAX_CLIENTS}] and --seconds in (0, {MAX_SECONDS}]")
    if a.url:
        if urlparse(a.url).hostname not in LOOPBACK:
            p.error(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}): this load test is local only")
        import os

        headers = {"Authorization": f"Bearer {os.environ[a.api_key_env]}"} if a.api_key_env else {}
        result = asyncio.run(over_http(a.url.rstrip("/"), a.clients, a.seconds, headers))
    else:
        result = in_process(a.bundle, a.clients, a.seconds, a.threads)
    text = json.dumps(result, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
