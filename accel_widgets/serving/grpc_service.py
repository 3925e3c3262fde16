"""TF Serving's ``PredictionService`` over gRPC: Predict and GetModelMetadata.

Handlers are registered with gRPC's generic handler API and take *raw bytes*: parsing the
protobuf ourselves lets a malformed request get INVALID_ARGUMENT with a sentence instead of
gRPC's bare "Exception deserializing request" INTERNAL, and no generated stub code is
needed. A handler only translates: it raises :class:`RequestError` to refuse, and
:mod:`accel_widgets.serving.pipeline` (a server interceptor) does auth, status codes,
metrics and logging for it, as for the Open Inference Protocol's handlers.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from accel_widgets.serving.pipeline import ROUTE_HEADER, note_model
from accel_widgets.serving.protocol import (
    DATA_TYPES,
    DEFAULT_SIGNATURE,
    PREDICT_METHOD_NAME,
    PREDICTION_SERVICE,
    SIGNATURE_DEF_FIELD,
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    ModelSpecChoices,
    PredictRequest,
    PredictResponse,
    SignatureDefMap,
)
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError, echo
from accel_widgets.serving.tensors import (
    DT_STRING,
    TensorError,
    output_tensor_proto,
    tensor_strings,
    tensor_to_numpy,
)

log = logging.getLogger("accel_widgets.serving")

__all__ = ["ROUTE_HEADER", "PredictionService", "parse_message", "signature_def_map"]


def parse_message(message_class: Any, raw: bytes) -> Any:
    """A request protobuf from bytes, or INVALID_ARGUMENT naming the message expected."""
    try:
        return message_class.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        name = message_class.DESCRIPTOR.name
        raise RequestError(
            "INVALID_ARGUMENT", f"the request is not a valid {name} protobuf: {exc}"
        ) from None


class PredictionService:
    """Predict and GetModelMetadata over a :class:`ModelRegistry`."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def handler(self) -> grpc.GenericRpcHandler:
        # No (de)serializers: the handlers get and return bytes (see the module docstring).
        return grpc.method_handlers_generic_handler(
            PREDICTION_SERVICE,
            {
                "Predict": grpc.unary_unary_rpc_method_handler(self.predict),
                "GetModelMetadata": grpc.unary_unary_rpc_method_handler(self.get_model_metadata),
            },
        )

    def _model(self, request: Any, raw: bytes) -> Any:
        """The model a request's ``model_spec`` names, with TF Serving's refusals.

        As TF Serving (``ServerCore::ServableRequestFromModelSpec``): an empty name is
        INVALID_ARGUMENT "ModelSpec has no name specified", an unknown model or version
        NOT_FOUND, an unknown ``version_label`` INVALID_ARGUMENT "Unrecognized servable
        version label" (this server has no labels: one version per model). A request that
        sets both ``version`` and ``version_label`` is refused too; TF Serving's parser would
        keep whichever came last. One difference, on purpose: a request with *no*
        ``model_spec`` (TF Serving: "Missing ModelSpec") is served by the default model,
        because that is what the retired Azure client sends (``amlrealtimeai``'s
        ``PredictionClient`` never sets it), and our own client does the same when no
        model name is given.
        """
        if not request.HasField("model_spec"):
            model = self.registry.get("")
            note_model(model.name)
            return model
        spec = request.model_spec
        if not spec.name:
            models = ", ".join(f"'{m.name}'" for m in self.registry.config.models)
            raise RequestError(
                "INVALID_ARGUMENT",
                f"ModelSpec has no name specified; name a model ({models}), or send no "
                "model_spec for the default one",
            )
        choice = spec.WhichOneof("version_choice")
        if choice is not None:
            sent = ModelSpecChoices.FromString(raw).model_spec
            if sent.HasField("version") and sent.version_label:
                raise RequestError(
                    "INVALID_ARGUMENT",
                    "the ModelSpec sets both version and version_label; they are one choice: "
                    "send one of them, or neither for the version served",
                )
        if choice == "version_label":
            raise RequestError(
                "INVALID_ARGUMENT",
                f"Unrecognized servable version label: {echo(spec.version_label)}; this server "
                "has no version labels: ask for a version number, or leave both out",
            )
        version = spec.version.value if choice == "version" else None
        self.registry.check_signature(spec.signature_name)
        model = self.registry.get(spec.name, version)
        note_model(model.name)
        return model

    # -- Predict ---------------------------------------------------------------------------

    def predict(self, raw: bytes, context: grpc.ServicerContext | None = None) -> bytes:
        request = parse_message(PredictRequest, raw)
        model = self._model(request, raw)
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
        return response.SerializeToString()

    # -- GetModelMetadata ------------------------------------------------------------------

    def get_model_metadata(self, raw: bytes, context: grpc.ServicerContext | None = None) -> bytes:
        request = parse_message(GetModelMetadataRequest, raw)
        fields = list(request.metadata_field) or [SIGNATURE_DEF_FIELD]
        unknown = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unknown:
            raise RequestError(
                "INVALID_ARGUMENT",
                f"metadata_field {echo(', '.join(unknown))} is not supported; ask for "
                f"'{SIGNATURE_DEF_FIELD}'",
            )
        model = self._model(request, raw)
        response = GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(model.signatures()))
        return response.SerializeToString()


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
