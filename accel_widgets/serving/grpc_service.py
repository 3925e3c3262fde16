"""TF Serving's ``PredictionService`` over gRPC: Predict and GetModelMetadata.

Handlers are registered with gRPC's generic handler API and take *raw bytes*: parsing the
protobuf ourselves lets a malformed request get INVALID_ARGUMENT with a sentence instead of
gRPC's bare "Exception deserializing request" INTERNAL, and no generated stub code is
needed. Every failure becomes a status code and a message; no exception escapes to gRPC,
so one bad request never affects the next.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from accel_widgets.serving.auth import KeyChecker
from accel_widgets.serving.protocol import (
    DATA_TYPES,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD_NAME,
    PREDICTION_SERVICE,
    SIGNATURE_DEF_FIELD,
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    PredictRequest,
    PredictResponse,
    SignatureDefMap,
)
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError
from accel_widgets.serving.tensors import (
    DT_STRING,
    TensorError,
    output_tensor_proto,
    tensor_strings,
    tensor_to_numpy,
)

log = logging.getLogger("accel_widgets.serving")

ROUTE_HEADER = "x-ms-aml-grpc-service-route"


class PredictionService:
    """Predict and GetModelMetadata over a :class:`ModelRegistry`, guarded by API keys."""

    def __init__(self, registry: ModelRegistry, keys: KeyChecker) -> None:
        self.registry = registry
        self.keys = keys

    def handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: the handlers get and return bytes (see the module docstring).
        return grpc.method_handlers_generic_handler(
            PREDICTION_SERVICE,
            {
                "Predict": grpc.unary_unary_rpc_method_handler(self.predict),
                "GetModelMetadata": grpc.unary_unary_rpc_method_handler(self.get_model_metadata),
            },
        )

    # -- shared steps ----------------------------------------------------------------------

    def _authorize(self, context: grpc.ServicerContext) -> None:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == ROUTE_HEADER:
                # Accepted for compatibility with Azure clients; routing is by model name.
                log.debug("route header %s", value)
        self.keys.check(authorization)

    @staticmethod
    def _parse(message_class: Any, raw: bytes) -> Any:
        try:
            return message_class.FromString(raw)
        except (DecodeError, RuntimeError, ValueError) as exc:
            name = message_class.DESCRIPTOR.name
            raise RequestError(
                "INVALID_ARGUMENT", f"the request is not a valid {name} protobuf: {exc}"
            ) from None

    def _model(self, spec: Any) -> Any:
        version = spec.version.value if spec.HasField("version") else None
        self.registry.check_signature(spec.signature_name)
        return self.registry.get(spec.name, version)

    @staticmethod
    def _fail(context: grpc.ServicerContext, code: str, message: str) -> bytes:
        context.set_code(grpc.StatusCode[code])
        context.set_details(message)
        return b""

    # -- Predict ---------------------------------------------------------------------------

    def predict(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.perf_counter()
        model_name = "-"
        try:
            self._authorize(context)
            request = self._parse(PredictRequest, raw)
            model = self._model(request.model_spec)
            model_name = model.name
            inputs = {
                name: _input_value(tensor, model.max_elements)
                for name, tensor in request.inputs.items()
            }
            outputs = self.registry.predict(model, inputs, list(request.output_filter))
            response = PredictResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            response.model_spec.signature_name = DEFAULT_SIGNATURE
            for key, array in outputs.items():
                response.outputs[key].CopyFrom(output_tensor_proto(array))
            body = response.SerializeToString()
            self.registry.observe(model_name, "grpc", "OK", started)
            return body
        except RequestError as exc:
            self.registry.observe(model_name, "grpc", exc.code, started)
            return self._fail(context, exc.code, exc.message)
        except Exception:
            log.exception("Predict failed unexpectedly")
            self.registry.observe(model_name, "grpc", "INTERNAL", started)
            return self._fail(context, "INTERNAL", "internal server error; see the server log")

    # -- GetModelMetadata ------------------------------------------------------------------

    def get_model_metadata(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            self._authorize(context)
            request = self._parse(GetModelMetadataRequest, raw)
            fields = list(request.metadata_field) or [SIGNATURE_DEF_FIELD]
            unknown = [f for f in fields if f != SIGNATURE_DEF_FIELD]
            if unknown:
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"metadata_field {', '.join(unknown)} is not supported; ask for "
                    f"'{SIGNATURE_DEF_FIELD}'",
                )
            model = self._model(request.model_spec)
            response = GetModelMetadataResponse()
            response.model_spec.name = model.name
            response.model_spec.version.value = model.version
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(model.signatures()))
            return response.SerializeToString()
        except RequestError as exc:
            return self._fail(context, exc.code, exc.message)
        except Exception:
            log.exception("GetModelMetadata failed unexpectedly")
            return self._fail(context, "INTERNAL", "internal server error; see the server log")


def _input_value(tensor: Any, max_elements: int) -> Any:
    """A request tensor as a list of encoded images (DT_STRING) or a numeric array."""
    try:
        if tensor.dtype == DT_STRING:
            return tensor_strings(tensor)
        return tensor_to_numpy(tensor, max_elements=max_elements)
    except TensorError as exc:
        raise RequestError("INVALID_ARGUMENT", f"input tensor: {exc}") from None


def signature_def_map(signatures: dict[str, dict[str, Any]]) -> Any:
    """``SignatureDefMap`` built from a model's signatures (name -> inputs/outputs dicts)."""
    result = SignatureDefMap()
    for signature_name, signature in signatures.items():
        definition = result.signature_def[signature_name]
        definition.method_name = PREDICT_METHOD_NAME
        for side in ("inputs", "outputs"):
            for key, info in signature[side].items():
                entry = getattr(definition, side)[key]
                entry.name = info["name"]
                entry.dtype = DATA_TYPES[info["dtype"]]
                for size in info["shape"]:
                    entry.tensor_shape.dim.add(size=size)
    return result
