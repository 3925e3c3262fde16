"""Helpers for tests/test_pinned_*.py: a tiny real model, and the real server run in-process.

The serving suite starts ``python -m accel_widgets.serving`` in a child process, as the
engine does. The pinned tests instead run the same :class:`~accel_widgets.serving.server.
Server` (real gRPC and HTTP ports on loopback, the real pipeline, the real model under ONNX
Runtime) on threads of the test process, for one reason: mutation testing
(bench/mutation.py) learns which tests reach a function from calls made in the test
process, so only such tests can kill a mutant of the serving code.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from accel_widgets.serving.config import ServerConfig
from accel_widgets.serving.server import ServeOptions, Server

CLASSES = 10
COLOUR_MODEL = "colours"


def colour_model(path: Path) -> Path:
    """ONNX: pixels ``[N, 224, 224, 3]`` float32 -> mean colour -> MatMul -> Softmax ``[N, 10]``.

    Class 0 follows red, 1 green, 2 blue (3..9 flat), so a red picture scores class 0: an
    answer a test can check without trusting the server's own arithmetic.
    """
    onnx = pytest.importorskip("onnx")  # the engine extra; the serving set does not need it
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, CLASSES), np.float32)
    weights[0, 0] = weights[1, 1] = weights[2, 2] = 8 / 255
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["colour"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["colour", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_colour",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 224, 224, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, CLASSES])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def colour_config(folder: Path, **extra: Any) -> ServerConfig:
    """A server config for :func:`colour_model` (written into ``folder``)."""
    onnx_path = colour_model(folder / "colours.onnx")
    model = {
        "name": COLOUR_MODEL,
        "onnx": str(onnx_path),
        "input_names": ["Placeholder:0"],
        "outputs": [{"alias": "output_alias", "onnx_output": "scores", "names": ["probs:0"]}],
    }
    return ServerConfig.from_dict({"models": [model], "workers": 4, **extra})


def png(colour: tuple[int, int, int] = (255, 0, 0), size: int = 8) -> bytes:
    """A small one-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def inprocess_server(config: ServerConfig, keys: tuple[str, ...] = ()) -> Iterator[Server]:
    """The real server on loopback, in this process; stopped (ports closed) on exit."""
    options = ServeOptions(
        host="127.0.0.1",
        port=0,
        rest_port=0,
        api_keys=tuple(k.encode() for k in keys),
        grace_seconds=0.0,
    )
    server = Server(config, options)
    try:
        server.start()
        yield server
    finally:
        server.stop(grace=0.0)


def grpc_call(
    port: int, method: str, request: Any, response_class: Any, key: str | None = None
) -> tuple[grpc.StatusCode, str, Any]:
    """One unary call: (status code, details, response or None)."""
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            response = call(request, timeout=30, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", None
    return grpc.StatusCode.OK, "", response


def http(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: (status, headers, body); error statuses are returned, not raised."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=dict(headers or {})
    )
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
