"""Start-up, shut-down and failure: ready file, SIGTERM drain, SIGKILL, refusals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serving_fixtures import (
    CAT_CLASSES,
    ROOT,
    ServerProcess,
    jpeg_bytes,
    running_server,
    slow_model,
    squeezenet_model,
    write_config,
)

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.errors import ScoringError


def _serve(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accel_widgets.serving", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_ready_file_names_the_ports_and_is_removed_on_exit(tmp_path):
    with running_server(tmp_path, write_config(tmp_path)) as server:
        info = json.loads(server.ready_file.read_text())
        assert info["pid"] == server.process.pid
        assert info["port"] > 0 and info["rest_port"] > 0 and info["port"] != info["rest_port"]
        assert info["models"] == ["squeezenet"] and info["auth"] is False
    assert server.process.returncode == 0
    assert not server.ready_file.exists()
    log = server.log()
    assert "ready: models squeezenet" in log and "stopped" in log
    # Every log line carries a timestamp.
    assert all(line[:4].isdigit() for line in log.splitlines() if line.strip())


def test_sigterm_lets_an_in_flight_request_finish_then_exits_zero(tmp_path):
    model = slow_model(tmp_path / "slow.onnx", matmuls=150)
    config = write_config(
        tmp_path,
        [{"name": "slow", "onnx": str(model)}],
        max_batch=64,
    )
    server = ServerProcess(tmp_path, config, "--grace-seconds", "30")
    server.wait_ready()
    with PredictionClient("127.0.0.1", server.port, timeout=60) as client:
        started = time.perf_counter()
        client.score_numpy_array(np.zeros((1, 224, 224, 3), np.float32))
        one_row = time.perf_counter() - started
        rows = max(2, min(24, math.ceil(2.0 / one_row)))
        result: dict = {}

        def slow_request() -> None:
            try:
                result["scores"] = client.score_numpy_array(
                    np.zeros((rows, 224, 224, 3), np.float32)
                )
            except Exception as exc:  # asserted below
                result["error"] = exc

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(min(0.5, rows * one_row / 4))
        assert thread.is_alive(), "the slow request finished before SIGTERM; test is void"
        code = server.terminate(timeout=60)
        thread.join(timeout=60)
    assert code == 0, server.log()
    assert "error" not in result, result.get("error")
    assert result["scores"].shape == (rows, 1)
    assert "SIGTERM received" in server.log()


def test_killed_server_gives_unavailable_with_advice(tmp_path):
    server = ServerProcess(tmp_path, write_config(tmp_path))
    server.wait_ready()
    errors: list[ScoringError] = []
    scored = threading.Event()
    image = jpeg_bytes()

    def load() -> None:
        with PredictionClient("127.0.0.1", server.port, timeout=20) as client:
            while True:
                try:
                    client.score_image(image)
                    scored.set()
                except ScoringError as exc:
                    errors.append(exc)
                    return

    thread = threading.Thread(target=load)
    thread.start()
    assert scored.wait(30)
    server.process.kill()
    server.process.wait(timeout=10)
    thread.join(timeout=40)
    server.kill()
    assert not thread.is_alive()
    assert errors and errors[0].code == "UNAVAILABLE"
    assert "is it running?" in str(errors[0]) and "accel-widgets services" in str(errors[0])


def test_client_to_a_port_nobody_listens_on_is_unavailable_quickly():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with PredictionClient("127.0.0.1", port, timeout=20) as client:
        assert client.is_ready() is False
        with pytest.raises(ScoringError) as info:
            client.score_image(jpeg_bytes())
    assert info.value.code == "UNAVAILABLE"
    assert time.monotonic() - started < 15  # 5 attempts with backoff, not the full timeout


def test_refuses_to_serve_beyond_loopback_without_keys(tmp_path):
    # The refusal happens before any socket is opened.
    result = _serve(["--config", str(write_config(tmp_path)), "--host", "0.0.0.0"])
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    assert "--insecure-no-auth" in result.stderr


def test_bad_config_exits_one_with_the_reason(tmp_path):
    config = write_config(tmp_path, [squeezenet_model(onnx=str(tmp_path / "missing.onnx"))])
    result = _serve(["--config", str(config)])
    assert result.returncode == 1
    assert "missing.onnx does not exist" in result.stderr
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"models": [squeezenet_model()], "api_key_file": "/k"}))
    result = _serve(["--config", str(typo)])
    assert result.returncode == 1 and "unknown key(s) api_key_file" in result.stderr


def test_preprocessing_that_does_not_fit_the_model_fails_at_start(tmp_path):
    model = squeezenet_model(preprocessing={"layout": "NHWC", "dtype": "float16"})
    result = _serve(["--config", str(write_config(tmp_path, [model]))])
    assert result.returncode == 1
    assert "preprocessing does not fit the model" in result.stderr
    assert "[1, 3, 224, 224]" in result.stderr


def test_a_port_in_use_is_an_error_not_a_shared_port(tmp_path):
    with running_server(tmp_path, write_config(tmp_path)) as first:
        second = tmp_path / "second"
        second.mkdir()
        result = _serve(
            ["--config", str(write_config(second)), "--port", str(first.port), "--no-rest"]
        )
        assert result.returncode == 1
        assert "cannot listen on 127.0.0.1:" in result.stderr
        with PredictionClient("127.0.0.1", first.port) as client:
            assert int(np.argmax(client.score_image(jpeg_bytes()))) in CAT_CLASSES


def _listening_port(server: ServerProcess, timeout: float = 30) -> int:
    """The gRPC port from the log's "listening" line, written before the models load."""
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"listening: gRPC 127\.0\.0\.1:(\d+)", server.log())
        if match:
            return int(match.group(1))
        time.sleep(0.02)
    raise AssertionError(f"no listening line:\n{server.log()}")


def test_requests_while_loading_hear_why_and_health_says_not_serving(tmp_path):
    import grpc

    from accel_widgets.serving import protocol

    model = slow_model(tmp_path / "slow.onnx", matmuls=400)
    config = write_config(tmp_path, [{"name": "slow", "onnx": str(model)}])
    server = ServerProcess(tmp_path, config)
    try:
        port = _listening_port(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        predict = channel.unary_unary(protocol.PREDICT_METHOD)
        check = channel.unary_unary(
            protocol.HEALTH_CHECK_METHOD,
            request_serializer=protocol.HealthCheckRequest.SerializeToString,
            response_deserializer=protocol.HealthCheckResponse.FromString,
        )
        status = check(protocol.HealthCheckRequest(), timeout=10, wait_for_ready=True)
        if server.ready_file.exists():
            pytest.skip("the model warmed up before the first request; nothing to observe")
        assert status.status == protocol.SERVING_STATUS["NOT_SERVING"]
        with pytest.raises(grpc.RpcError) as info:
            predict(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in info.value.details()
        server.wait_ready()
        status = check(protocol.HealthCheckRequest(), timeout=10)
        assert status.status == protocol.SERVING_STATUS["SERVING"]
        channel.close()
    finally:
        server.terminate()


def test_health_watch_streams_status_and_ends_on_shutdown(tmp_path):
    import grpc

    from accel_widgets.serving import protocol

    server = ServerProcess(tmp_path, write_config(tmp_path), "--grace-seconds", "20")
    server.wait_ready()
    channel = grpc.insecure_channel(server.target)
    watch = channel.unary_stream(
        protocol.HEALTH_WATCH_METHOD,
        request_serializer=protocol.HealthCheckRequest.SerializeToString,
        response_deserializer=protocol.HealthCheckResponse.FromString,
    )
    stream = watch(protocol.HealthCheckRequest(service=protocol.PREDICTION_SERVICE), timeout=60)
    assert next(stream).status == protocol.SERVING_STATUS["SERVING"]
    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    statuses = [message.status for message in stream]
    channel.close()
    assert statuses[-1:] == [protocol.SERVING_STATUS["NOT_SERVING"]]
    assert time.monotonic() - started < 10, "an open Watch stream held up the shutdown"
