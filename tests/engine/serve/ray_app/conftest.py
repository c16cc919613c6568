"""A real Ray cluster on this machine, started and stopped by the tests (one per module).

`ray_serve` runs `cadenza serve --ray --replicas 2` as a process: it starts its own
local Ray cluster (its processes inherit a private `RAY_TMPDIR`, by which the tests
find every one of them, and an auth token of their own, so nothing is written to
~/.ray), deploys two replicas of `tiny` (no CPU reserved, one engine thread each,
4 slots, a proxy queue of 16) behind Ray Serve's proxy on 127.0.0.1, and prints its
URL. This test process then attaches to the cluster as a driver (`ray_serve.attach()`)
to find and kill replica actors. `ray_serve.stop()` (SIGTERM) must shut it all down.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Ray reads its auth settings once per process: set them before it is first imported. The cluster and
# this process (attached as a driver) share a token of their own; nothing is written to ~/.ray.
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
os.environ.update(RAY_ENV)
pytest.importorskip("ray", reason="the Ray Serve tests need the [ray] extra: pip install -e .[ray]")

from support import wait_for  # noqa: E402

API_KEY = "ray-test-key"
MAX_STREAMS, MAX_QUEUE = 4, 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayServe:
    """`cadenza serve --ray` as a process, and what the tests need of its cluster."""

    def __init__(self, bundle: Path, voices: Path):
        self.tmp = tempfile.mkdtemp(prefix="cdz-ray-", dir="/tmp")  # short: Ray's unix sockets live below
        self.voices = voices
        self.ray_env = {**RAY_ENV, "RAY_TMPDIR": self.tmp}
        self.max_streams, self.max_queue = MAX_STREAMS, MAX_QUEUE
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {API_KEY}"}
        self.log = Path(self.tmp) / "serve.log"
        self.out = Path(self.tmp) / "serve.out"
        cmd = [sys.executable, "-m", "cadenza.engine.cli", "serve", "--ray", "--bundle", f"tiny={bundle}",
               "--replicas", "2", "--replica-cpus", "0", "--threads", "1", "--max-streams", str(MAX_STREAMS),
               "--max-queue", str(MAX_QUEUE), "--port", str(self.port), "--voice-store", str(voices),
               "--api-key-env", "CADENZA_RAY_TEST_KEY", "--drain-timeout", "10"]
        env = {**os.environ, **self.ray_env, "CADENZA_RAY_TEST_KEY": API_KEY}
        with open(self.out, "wb") as out, open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=log)
        self._saved_env: dict | None = None
        self.gcs = self._wait_started()

    def _wait_started(self) -> str:
        def line():
            text = self.out.read_text() if self.out.exists() else ""
            return next((s for s in text.splitlines() if "http://" in s), None)

        ok = wait_for(lambda: line() is not None or self.proc.poll() is not None, timeout=240, interval=0.2)
        if not ok or line() is None:
            raise RuntimeError(f"cadenza serve --ray did not start:\n{self.log.read_text()[-4000:]}")
        return line().rsplit("Ray cluster ", 1)[1].rstrip(")")

    def attach(self):
        """This process joins the cluster as a driver (once); returns the `ray` module."""
        import ray

        if not ray.is_initialized():
            self._saved_env = {k: os.environ.get(k) for k in self.ray_env}
            os.environ.update(self.ray_env)
            ray.init(address=self.gcs, log_to_driver=False)
        return ray

    def detach(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for k, v in (self._saved_env or {}).items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        self._saved_env = None

    def pids(self) -> list[int]:
        """Every process of this cluster: its environment holds our RAY_TMPDIR, or (Ray's processes
        retitle themselves over their environment) one of its open files lies below it."""
        mark = f"RAY_TMPDIR={self.tmp}".encode()
        return [int(d.name) for d in Path("/proc").iterdir()
                if d.name.isdigit() and int(d.name) != os.getpid() and self._ours(d, mark)]

    def _ours(self, proc: Path, mark: bytes) -> bool:
        try:
            if mark in (proc / "environ").read_bytes().split(b"\0"):
                return True
            return any(os.readlink(fd).startswith(self.tmp) for fd in (proc / "fd").iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            return False

    def stop(self, timeout: float = 90) -> int | None:
        """SIGTERM `cadenza serve --ray` (it deletes the app and shuts its cluster down); its exit status."""
        self.detach()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> None:
        """Kill what is left of the processes this fixture started (by pid), remove the temp dir."""
        self.detach()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not self.pids(), timeout=10, interval=0.1)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_serve(tiny_bundle, tmp_path_factory):
    cluster = RayServe(tiny_bundle, tmp_path_factory.mktemp("ray-voices"))
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module")
def reference(tiny_bundle, ray_serve):
    """An engine in this process over the same bundle and voice store, one thread: the expected audio."""
    from cadenza.engine import Engine

    with Engine.load(tiny_bundle, threads=1, max_streams=4, voice_store=ray_serve.voices) as engine:
        yield engine
