"""The Open Inference Protocol's ``inference.GRPCInferenceService``, on the Predict port.

What ``tritonclient.grpc``, the ``kserve`` SDK and KServe's ``grpc-v2`` runtimes call:
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer. Like
:mod:`~accel_widgets.serving.grpc_service`, handlers take and return raw bytes (a malformed
message is INVALID_ARGUMENT with a sentence) and leave auth, status codes and metrics to
:mod:`~accel_widgets.serving.pipeline`.

Responses mirror the request's data spelling: ``raw_input_contents`` in (what tritonclient
sends) -> ``raw_output_contents`` out; typed ``contents`` in -> typed ``contents`` out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from accel_widgets.serving import v2
from accel_widgets.serving.grpc_service import parse_message
from accel_widgets.serving.health import HealthService
from accel_widgets.serving.pipeline import note_model
from accel_widgets.serving.protocol import (
    INFERENCE_SERVICE,
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ModelReadyResponse,
    ServerLiveRequest,
    ServerLiveResponse,
    ServerMetadataRequest,
    ServerMetadataResponse,
    ServerReadyRequest,
    ServerReadyResponse,
)
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError


class InferenceService:
    """The v2 gRPC methods over a :class:`ModelRegistry` and the server's health."""

    def __init__(self, registry: ModelRegistry, health: HealthService) -> None:
        self.registry = registry
        self.health = health

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, Callable[[bytes, Any], bytes]] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }
        return grpc.method_handlers_generic_handler(
            INFERENCE_SERVICE,
            {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()},
        )

    def _model(self, name: str, version: str) -> Any:
        model = self.registry.get(name, v2.parse_version(version))
        note_model(model.name)
        return model

    # -- health and metadata ---------------------------------------------------------------

    def server_live(self, raw: bytes, context: Any = None) -> bytes:
        parse_message(ServerLiveRequest, raw)
        return ServerLiveResponse(live=True).SerializeToString()

    def server_ready(self, raw: bytes, context: Any = None) -> bytes:
        parse_message(ServerReadyRequest, raw)
        return ServerReadyResponse(ready=self.health.serving).SerializeToString()

    def model_ready(self, raw: bytes, context: Any = None) -> bytes:
        request = parse_message(ModelReadyRequest, raw)
        try:
            self._model(request.name, request.version)
        except RequestError as exc:
            if exc.code != "UNAVAILABLE":  # loading: not ready; unknown: NOT_FOUND
                raise
            return ModelReadyResponse(ready=False).SerializeToString()
        return ModelReadyResponse(ready=True).SerializeToString()

    def server_metadata(self, raw: bytes, context: Any = None) -> bytes:
        parse_message(ServerMetadataRequest, raw)
        return ServerMetadataResponse(**v2.server_metadata()).SerializeToString()

    def model_metadata(self, raw: bytes, context: Any = None) -> bytes:
        request = parse_message(ModelMetadataRequest, raw)
        model = self._model(request.name, request.version)
        metadata = v2.model_metadata(model)
        response = ModelMetadataResponse(
            name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
        )
        for side in ("inputs", "outputs"):
            for entry in metadata[side]:
                getattr(response, side).add(**entry)
        return response.SerializeToString()

    # -- ModelInfer ------------------------------------------------------------------------

    def model_infer(self, raw: bytes, context: Any = None) -> bytes:
        request = parse_message(ModelInferRequest, raw)
        model = self._model(request.model_name, request.model_version)
        use_raw = len(request.raw_input_contents) > 0
        if use_raw and len(request.raw_input_contents) != len(request.inputs):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"the request has {len(request.inputs)} input(s) but "
                f"{len(request.raw_input_contents)} raw_input_contents; send one per input",
            )
        inputs = []
        for index, entry in enumerate(request.inputs):
            spec = v2.tensor(entry.name, entry.datatype, list(entry.shape))
            if use_raw and entry.HasField("contents"):
                # The protocol: raw_input_contents holds every input's data or none; a
                # request with both would leave the server to guess which one is meant.
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"{spec.describe()} has typed contents, but the request also has "
                    "raw_input_contents: send each input's data one way only (all raw, or "
                    "all in contents)",
                )
            if use_raw:
                value = v2.from_raw(model, spec, request.raw_input_contents[index])
            elif spec.datatype not in v2.CONTENTS_FIELD:
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"{spec.describe()}: {spec.datatype} has no typed contents field; send it "
                    "in raw_input_contents",
                )
            else:
                value = v2.from_values(
                    model, spec, getattr(entry.contents, v2.CONTENTS_FIELD[spec.datatype])
                )
            inputs.append((spec, value))
        outputs = v2.infer(self.registry, model, inputs, [o.name for o in request.outputs])
        response = ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        for name, array in outputs:
            out = response.outputs.add(name=name, datatype="FP32", shape=array.shape)
            if use_raw:
                response.raw_output_contents.append(np.ascontiguousarray(array, "<f4").tobytes())
            else:
                out.contents.fp32_contents.extend(array.ravel())
        return response.SerializeToString()
