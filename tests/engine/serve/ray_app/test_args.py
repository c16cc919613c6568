"""`ServeArgs`: what `serve run ...:app_builder key=value` and `cadenza serve --ray` give a deployment,
and the Ray Serve options it becomes (no cluster needed)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("ray", reason="the Ray Serve tests need the [ray] extra: pip install -e .[ray]")

from cadenza.engine.serve.ray_app import ServeArgs, build_app  # noqa: E402


def test_serve_run_strings_are_converted_and_paths_made_absolute():
    a = ServeArgs.model_validate({"bundle": "bundles/tiny,small=other/small", "replicas": "2", "replica_cpus": "0.5",
                                  "voice_store": "voices"})
    assert a.bundle == {"tiny": os.path.abspath("bundles/tiny"), "small": os.path.abspath("other/small")}
    assert (a.replicas, a.replica_cpus, a.voice_store) == (2, 0.5, os.path.abspath("voices"))
    assert a.engine_threads == 1  # at least one thread, at most the CPUs reserved unless threads is given


def test_options_tie_ongoing_requests_to_the_slots_and_refuse_with_429():
    opts = ServeArgs(bundle={"t": "/b"}, replicas=3, max_streams=8, max_queue=5, replica_cpus=0,
                     drain_timeout=12).deployment_options()
    assert opts["num_replicas"] == 3 and "autoscaling_config" not in opts
    assert opts["max_ongoing_requests"] == 8 and opts["max_queued_requests"] == 5
    assert (opts["backpressure_config"].status_code, opts["backpressure_config"].retry_after_s) == (429, 1)
    assert opts["ray_actor_options"] == {"num_cpus": 0} and opts["graceful_shutdown_timeout_s"] == 12


def test_autoscaling_between_min_and_max_on_ongoing_requests():
    opts = ServeArgs(bundle={"t": "/b"}, min_replicas=0, max_replicas=4, max_streams=16).deployment_options()
    assert "num_replicas" not in opts
    assert opts["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 1,
                                          "target_ongoing_requests": 12.0}
    opts = ServeArgs(bundle={"t": "/b"}, max_replicas=2, target_streams=3).deployment_options()
    auto = opts["autoscaling_config"]
    assert auto["min_replicas"] == 1 and auto["target_ongoing_requests"] == 3


def test_the_api_key_travels_in_the_replicas_environment_not_their_arguments(monkeypatch):
    monkeypatch.setenv("CADENZA_ARGS_TEST_KEY", "s3cret")
    a = ServeArgs(bundle={"t": "/b"}, api_key_env="CADENZA_ARGS_TEST_KEY")
    env = a.deployment_options()["ray_actor_options"]["runtime_env"]
    assert env == {"env_vars": {"CADENZA_ARGS_TEST_KEY": "s3cret"}}
    assert "s3cret" not in repr(a.model_dump())
    app = build_app(a)
    assert app is not None  # a bound application, deployable with serve.run


@pytest.mark.parametrize("args,match", [
    pytest.param({"bundle": "b", "replica": 2}, "Extra inputs are not permitted", id="unknown-key"),
    pytest.param({"bundle": "b", "replicas": 0}, "greater than or equal to 1", id="zero-replicas"),
    pytest.param({"bundle": "b", "replicas": 2, "max_replicas": 3}, "not both", id="fixed-and-autoscaling"),
    pytest.param({"bundle": "b", "min_replicas": 2}, "needs max_replicas", id="min-without-max"),
    pytest.param({"bundle": "b", "min_replicas": 3, "max_replicas": 2}, "over max_replicas", id="min-over-max"),
    pytest.param({"bundle": "a=x,a=y"}, "given twice", id="same-name"),
    pytest.param({"bundle": ","}, "at least one bundle", id="no-bundle"),
    pytest.param({"bundle": "a/b=x"}, "without '/'", id="slash-in-name"),
])
def test_bad_arguments_are_refused_with_the_reason(args, match):
    with pytest.raises(ValueError, match=match):
        ServeArgs.model_validate(args)
