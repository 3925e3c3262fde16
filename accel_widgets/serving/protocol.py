"""TensorFlow Serving's messages, built at import time from descriptors written in Python.

Why not generated ``_pb2`` modules: generated code checks the protobuf runtime it was
generated for and refuses to import under another major version (docs/FINDINGS.md), and the
official ``tensorflow-serving-api`` package drags in all of TensorFlow. Instead this module
describes the messages of ``accel_widgets/serving/protos/*.proto`` as
``FileDescriptorProto`` objects, adds them to a *private* descriptor pool and asks
protobuf's message factory for the classes. It works with any protobuf 5+, and a private
pool cannot clash with TensorFlow's own ``tensorflow.TensorProto`` when a notebook has
imported TensorFlow too.

The ``.proto`` files remain the reference for humans and other languages;
``tests/test_serving_protocol.py`` compiles them with ``grpc_tools.protoc`` and checks that
every message, field, number and type here matches, so the two cannot drift.

Field numbers are TF Serving's (``tensorflow/core/framework/tensor.proto``,
``tensorflow_serving/apis/predict.proto`` ...): the server is wire-compatible with the
official TF Serving client and with the retired Azure accelerated-models client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto

#: Field types by the names used in the tables below.
_TYPES = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
}


def _field(
    name: str,
    number: int,
    type_: str,
    *,
    repeated: bool = False,
    oneof: int | None = None,
    packed: bool = False,
) -> _F:
    """One field; ``type_`` is a scalar name, ``.full.MessageName`` or ``enum:.full.Name``."""
    field = _F(name=name, number=number, json_name=_json_name(name))
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_ in _TYPES:
        field.type = _TYPES[type_]
    elif type_.startswith("enum:"):
        field.type = _F.TYPE_ENUM
        field.type_name = type_[5:]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = type_
    if oneof is not None:
        field.oneof_index = oneof
    if packed:
        field.options.packed = True
    return field


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _map_entry(name: str, value_type: str) -> descriptor_pb2.DescriptorProto:
    """The nested ``XxxEntry`` message protoc writes for ``map<string, V> xxx``."""
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, "string"))
    entry.field.append(_field("value", 2, value_type))
    return entry


def _message(
    name: str,
    fields: Sequence[_F],
    *,
    nested: Sequence[descriptor_pb2.DescriptorProto] = (),
    enums: Sequence[descriptor_pb2.EnumDescriptorProto] = (),
    oneofs: Sequence[str] = (),
) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    message.field.extend(fields)
    message.nested_type.extend(nested)
    message.enum_type.extend(enums)
    for oneof in oneofs:
        message.oneof_decl.add(name=oneof)
    return message


def _enum(name: str, values: Sequence[tuple[str, int]]) -> descriptor_pb2.EnumDescriptorProto:
    enum = descriptor_pb2.EnumDescriptorProto(name=name)
    for value_name, number in values:
        enum.value.add(name=value_name, number=number)
    return enum


def _file(
    name: str,
    package: str,
    deps: Sequence[str],
    messages: Sequence[descriptor_pb2.DescriptorProto] = (),
    enums: Sequence[descriptor_pb2.EnumDescriptorProto] = (),
    services: Sequence[descriptor_pb2.ServiceDescriptorProto] = (),
) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    proto.dependency.extend(deps)
    proto.message_type.extend(messages)
    proto.enum_type.extend(enums)
    proto.service.extend(services)
    return proto


def _service(
    name: str, methods: Sequence[tuple[str, str, str, bool]]
) -> descriptor_pb2.ServiceDescriptorProto:
    service = descriptor_pb2.ServiceDescriptorProto(name=name)
    for method, request, response, server_streaming in methods:
        m = service.method.add(name=method, input_type=request, output_type=response)
        if server_streaming:
            m.server_streaming = True
    return service


#: TensorFlow's DataType enum (tensorflow/core/framework/types.proto), the values we name.
DATA_TYPES: dict[str, int] = {
    "DT_INVALID": 0,
    "DT_FLOAT": 1,
    "DT_DOUBLE": 2,
    "DT_INT32": 3,
    "DT_UINT8": 4,
    "DT_INT16": 5,
    "DT_INT8": 6,
    "DT_STRING": 7,
    "DT_COMPLEX64": 8,
    "DT_INT64": 9,
    "DT_BOOL": 10,
    "DT_QINT8": 11,
    "DT_QUINT8": 12,
    "DT_QINT32": 13,
    "DT_BFLOAT16": 14,
    "DT_QINT16": 15,
    "DT_QUINT16": 16,
    "DT_UINT16": 17,
    "DT_COMPLEX128": 18,
    "DT_HALF": 19,
    "DT_RESOURCE": 20,
    "DT_VARIANT": 21,
    "DT_UINT32": 22,
    "DT_UINT64": 23,
}
DATA_TYPE_NAMES: dict[int, str] = {number: name for name, number in DATA_TYPES.items()}

_DT = "enum:.tensorflow.DataType"
_SHAPE = ".tensorflow.TensorShapeProto"
_TENSOR = ".tensorflow.TensorProto"
_SPEC = ".tensorflow.serving.ModelSpec"


def file_descriptor_protos() -> list[descriptor_pb2.FileDescriptorProto]:
    """Our ``.proto`` files as descriptors, in dependency order (the test compares these)."""
    types = _file(
        "tensorflow/core/framework/types.proto",
        "tensorflow",
        [],
        enums=[_enum("DataType", list(DATA_TYPES.items()))],
    )
    shape = _file(
        "tensorflow/core/framework/tensor_shape.proto",
        "tensorflow",
        [],
        messages=[
            _message(
                "TensorShapeProto",
                [
                    _field("dim", 2, ".tensorflow.TensorShapeProto.Dim", repeated=True),
                    _field("unknown_rank", 3, "bool"),
                ],
                nested=[_message("Dim", [_field("size", 1, "int64"), _field("name", 2, "string")])],
            )
        ],
    )
    tensor = _file(
        "tensorflow/core/framework/tensor.proto",
        "tensorflow",
        ["tensorflow/core/framework/tensor_shape.proto", "tensorflow/core/framework/types.proto"],
        messages=[
            _message(
                "TensorProto",
                [
                    _field("dtype", 1, _DT),
                    _field("tensor_shape", 2, _SHAPE),
                    _field("version_number", 3, "int32"),
                    _field("tensor_content", 4, "bytes"),
                    _field("half_val", 13, "int32", repeated=True, packed=True),
                    _field("float_val", 5, "float", repeated=True, packed=True),
                    _field("double_val", 6, "double", repeated=True, packed=True),
                    _field("int_val", 7, "int32", repeated=True, packed=True),
                    _field("string_val", 8, "bytes", repeated=True),
                    _field("scomplex_val", 9, "float", repeated=True, packed=True),
                    _field("int64_val", 10, "int64", repeated=True, packed=True),
                    _field("bool_val", 11, "bool", repeated=True, packed=True),
                    _field("dcomplex_val", 12, "double", repeated=True, packed=True),
                    _field("uint32_val", 16, "uint32", repeated=True, packed=True),
                    _field("uint64_val", 17, "uint64", repeated=True, packed=True),
                ],
            )
        ],
    )
    meta_graph = _file(
        "tensorflow/core/protobuf/meta_graph.proto",
        "tensorflow",
        ["tensorflow/core/framework/tensor_shape.proto", "tensorflow/core/framework/types.proto"],
        messages=[
            _message(
                "TensorInfo",
                [
                    _field("name", 1, "string", oneof=0),
                    _field("dtype", 2, _DT),
                    _field("tensor_shape", 3, _SHAPE),
                ],
                oneofs=["encoding"],
            ),
            _message(
                "SignatureDef",
                [
                    _field("inputs", 1, ".tensorflow.SignatureDef.InputsEntry", repeated=True),
                    _field("outputs", 2, ".tensorflow.SignatureDef.OutputsEntry", repeated=True),
                    _field("method_name", 3, "string"),
                ],
                nested=[
                    _map_entry("InputsEntry", ".tensorflow.TensorInfo"),
                    _map_entry("OutputsEntry", ".tensorflow.TensorInfo"),
                ],
            ),
        ],
    )
    model = _file(
        "tensorflow_serving/apis/model.proto",
        "tensorflow.serving",
        ["google/protobuf/wrappers.proto"],
        messages=[
            _message(
                "ModelSpec",
                [
                    _field("name", 1, "string"),
                    _field("version", 2, ".google.protobuf.Int64Value", oneof=0),
                    _field("version_label", 4, "string", oneof=0),
                    _field("signature_name", 3, "string"),
                ],
                oneofs=["version_choice"],
            )
        ],
    )
    predict = _file(
        "tensorflow_serving/apis/predict.proto",
        "tensorflow.serving",
        ["tensorflow/core/framework/tensor.proto", "tensorflow_serving/apis/model.proto"],
        messages=[
            _message(
                "PredictRequest",
                [
                    _field("model_spec", 1, _SPEC),
                    _field(
                        "inputs", 2, ".tensorflow.serving.PredictRequest.InputsEntry", repeated=True
                    ),
                    _field("output_filter", 3, "string", repeated=True),
                ],
                nested=[_map_entry("InputsEntry", _TENSOR)],
            ),
            _message(
                "PredictResponse",
                [
                    _field("model_spec", 2, _SPEC),
                    _field(
                        "outputs",
                        1,
                        ".tensorflow.serving.PredictResponse.OutputsEntry",
                        repeated=True,
                    ),
                ],
                nested=[_map_entry("OutputsEntry", _TENSOR)],
            ),
        ],
    )
    metadata = _file(
        "tensorflow_serving/apis/get_model_metadata.proto",
        "tensorflow.serving",
        [
            "google/protobuf/any.proto",
            "tensorflow/core/protobuf/meta_graph.proto",
            "tensorflow_serving/apis/model.proto",
        ],
        messages=[
            _message(
                "SignatureDefMap",
                [
                    _field(
                        "signature_def",
                        1,
                        ".tensorflow.serving.SignatureDefMap.SignatureDefEntry",
                        repeated=True,
                    )
                ],
                nested=[_map_entry("SignatureDefEntry", ".tensorflow.SignatureDef")],
            ),
            _message(
                "GetModelMetadataRequest",
                [
                    _field("model_spec", 1, _SPEC),
                    _field("metadata_field", 2, "string", repeated=True),
                ],
            ),
            _message(
                "GetModelMetadataResponse",
                [
                    _field("model_spec", 1, _SPEC),
                    _field(
                        "metadata",
                        2,
                        ".tensorflow.serving.GetModelMetadataResponse.MetadataEntry",
                        repeated=True,
                    ),
                ],
                nested=[_map_entry("MetadataEntry", ".google.protobuf.Any")],
            ),
        ],
    )
    service = _file(
        "tensorflow_serving/apis/prediction_service.proto",
        "tensorflow.serving",
        [
            "tensorflow_serving/apis/get_model_metadata.proto",
            "tensorflow_serving/apis/predict.proto",
        ],
        services=[
            _service(
                "PredictionService",
                [
                    (
                        "Predict",
                        ".tensorflow.serving.PredictRequest",
                        ".tensorflow.serving.PredictResponse",
                        False,
                    ),
                    (
                        "GetModelMetadata",
                        ".tensorflow.serving.GetModelMetadataRequest",
                        ".tensorflow.serving.GetModelMetadataResponse",
                        False,
                    ),
                ],
            )
        ],
    )
    status = ".grpc.health.v1.HealthCheckResponse.ServingStatus"
    health = _file(
        "grpc/health/v1/health.proto",
        "grpc.health.v1",
        [],
        messages=[
            _message("HealthCheckRequest", [_field("service", 1, "string")]),
            _message(
                "HealthCheckResponse",
                [_field("status", 1, "enum:" + status)],
                enums=[
                    _enum(
                        "ServingStatus",
                        [
                            ("UNKNOWN", 0),
                            ("SERVING", 1),
                            ("NOT_SERVING", 2),
                            ("SERVICE_UNKNOWN", 3),
                        ],
                    )
                ],
            ),
        ],
        services=[
            _service(
                "Health",
                [
                    (
                        "Check",
                        ".grpc.health.v1.HealthCheckRequest",
                        ".grpc.health.v1.HealthCheckResponse",
                        False,
                    ),
                    (
                        "Watch",
                        ".grpc.health.v1.HealthCheckRequest",
                        ".grpc.health.v1.HealthCheckResponse",
                        True,
                    ),
                ],
            )
        ],
    )
    return [types, shape, tensor, meta_graph, model, predict, metadata, service, health, _v2()]


_V2 = ".inference."


def _v2_parameters(owner: str, number: int) -> tuple[_F, descriptor_pb2.DescriptorProto]:
    """``map<string, InferParameter> parameters``: the field and its nested entry."""
    field = _field("parameters", number, f"{owner}.ParametersEntry", repeated=True)
    return field, _map_entry("ParametersEntry", _V2 + "InferParameter")


def _v2_tensor(name: str, owner: str) -> descriptor_pb2.DescriptorProto:
    """An input or output tensor of the v2 protocol (the two have the same fields)."""
    parameters, entry = _v2_parameters(f"{owner}.{name}", 4)
    return _message(
        name,
        [
            _field("name", 1, "string"),
            _field("datatype", 2, "string"),
            _field("shape", 3, "int64", repeated=True),
            parameters,
            _field("contents", 5, _V2 + "InferTensorContents"),
        ],
        nested=[entry],
    )


def _v2() -> descriptor_pb2.FileDescriptorProto:
    """The Open Inference Protocol (``inference`` package, KServe's grpc_predict_v2.proto)."""
    name_version = [_field("name", 1, "string"), _field("version", 2, "string")]
    request = _V2 + "ModelInferRequest"
    response = _V2 + "ModelInferResponse"
    request_parameters, request_entry = _v2_parameters(request, 4)
    response_parameters, response_entry = _v2_parameters(response, 4)
    output_parameters, output_entry = _v2_parameters(request + ".InferRequestedOutputTensor", 2)
    messages = [
        _message("ServerLiveRequest", []),
        _message("ServerLiveResponse", [_field("live", 1, "bool")]),
        _message("ServerReadyRequest", []),
        _message("ServerReadyResponse", [_field("ready", 1, "bool")]),
        _message("ModelReadyRequest", name_version),
        _message("ModelReadyResponse", [_field("ready", 1, "bool")]),
        _message("ServerMetadataRequest", []),
        _message(
            "ServerMetadataResponse",
            [*name_version, _field("extensions", 3, "string", repeated=True)],
        ),
        _message("ModelMetadataRequest", name_version),
        _message(
            "ModelMetadataResponse",
            [
                _field("name", 1, "string"),
                _field("versions", 2, "string", repeated=True),
                _field("platform", 3, "string"),
                _field("inputs", 4, _V2 + "ModelMetadataResponse.TensorMetadata", repeated=True),
                _field("outputs", 5, _V2 + "ModelMetadataResponse.TensorMetadata", repeated=True),
            ],
            nested=[
                _message(
                    "TensorMetadata",
                    [
                        _field("name", 1, "string"),
                        _field("datatype", 2, "string"),
                        _field("shape", 3, "int64", repeated=True),
                    ],
                )
            ],
        ),
        _message(
            "ModelInferRequest",
            [
                _field("model_name", 1, "string"),
                _field("model_version", 2, "string"),
                _field("id", 3, "string"),
                request_parameters,
                _field("inputs", 5, request + ".InferInputTensor", repeated=True),
                _field("outputs", 6, request + ".InferRequestedOutputTensor", repeated=True),
                _field("raw_input_contents", 7, "bytes", repeated=True),
            ],
            nested=[
                _v2_tensor("InferInputTensor", request),
                _message(
                    "InferRequestedOutputTensor",
                    [_field("name", 1, "string"), output_parameters],
                    nested=[output_entry],
                ),
                request_entry,
            ],
        ),
        _message(
            "ModelInferResponse",
            [
                _field("model_name", 1, "string"),
                _field("model_version", 2, "string"),
                _field("id", 3, "string"),
                response_parameters,
                _field("outputs", 5, response + ".InferOutputTensor", repeated=True),
                _field("raw_output_contents", 6, "bytes", repeated=True),
            ],
            nested=[_v2_tensor("InferOutputTensor", response), response_entry],
        ),
        _message(
            "InferParameter",
            [
                _field("bool_param", 1, "bool", oneof=0),
                _field("int64_param", 2, "int64", oneof=0),
                _field("string_param", 3, "string", oneof=0),
                _field("double_param", 4, "double", oneof=0),
                _field("uint64_param", 5, "uint64", oneof=0),
            ],
            oneofs=["parameter_choice"],
        ),
        _message(
            "InferTensorContents",
            [
                _field("bool_contents", 1, "bool", repeated=True),
                _field("int_contents", 2, "int32", repeated=True),
                _field("int64_contents", 3, "int64", repeated=True),
                _field("uint_contents", 4, "uint32", repeated=True),
                _field("uint64_contents", 5, "uint64", repeated=True),
                _field("fp32_contents", 6, "float", repeated=True),
                _field("fp64_contents", 7, "double", repeated=True),
                _field("bytes_contents", 8, "bytes", repeated=True),
            ],
        ),
    ]
    rpcs = [
        ("ServerLive", False),
        ("ServerReady", False),
        ("ModelReady", False),
        ("ServerMetadata", False),
        ("ModelMetadata", False),
        ("ModelInfer", False),
    ]
    service = _service(
        "GRPCInferenceService",
        [(m, f"{_V2}{m}Request", f"{_V2}{m}Response", streaming) for m, streaming in rpcs],
    )
    return _file(
        "inference/grpc_predict_v2.proto", "inference", [], messages=messages, services=[service]
    )


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for well_known in (wrappers_pb2.DESCRIPTOR, any_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        well_known.CopyToProto(proto)
        pool.AddSerializedFile(proto.SerializeToString())
    for proto in file_descriptor_protos():
        pool.AddSerializedFile(proto.SerializeToString())
    return pool


POOL = _build_pool()


def message_class(full_name: str) -> Any:
    """The message class for a full name such as ``tensorflow.serving.PredictRequest``."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


TensorProto = message_class("tensorflow.TensorProto")
TensorShapeProto = message_class("tensorflow.TensorShapeProto")
TensorInfo = message_class("tensorflow.TensorInfo")
SignatureDef = message_class("tensorflow.SignatureDef")
ModelSpec = message_class("tensorflow.serving.ModelSpec")
PredictRequest = message_class("tensorflow.serving.PredictRequest")
PredictResponse = message_class("tensorflow.serving.PredictResponse")
SignatureDefMap = message_class("tensorflow.serving.SignatureDefMap")
GetModelMetadataRequest = message_class("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = message_class("tensorflow.serving.GetModelMetadataResponse")
HealthCheckRequest = message_class("grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = message_class("grpc.health.v1.HealthCheckResponse")
ServerLiveRequest = message_class("inference.ServerLiveRequest")
ServerLiveResponse = message_class("inference.ServerLiveResponse")
ServerReadyRequest = message_class("inference.ServerReadyRequest")
ServerReadyResponse = message_class("inference.ServerReadyResponse")
ModelReadyRequest = message_class("inference.ModelReadyRequest")
ModelReadyResponse = message_class("inference.ModelReadyResponse")
ServerMetadataRequest = message_class("inference.ServerMetadataRequest")
ServerMetadataResponse = message_class("inference.ServerMetadataResponse")
ModelMetadataRequest = message_class("inference.ModelMetadataRequest")
ModelMetadataResponse = message_class("inference.ModelMetadataResponse")
ModelInferRequest = message_class("inference.ModelInferRequest")
ModelInferResponse = message_class("inference.ModelInferResponse")

#: gRPC method paths, as ``channel.unary_unary`` and the generic handlers want them.
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
PREDICT_METHOD = f"/{PREDICTION_SERVICE}/Predict"
GET_MODEL_METADATA_METHOD = f"/{PREDICTION_SERVICE}/GetModelMetadata"
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK_METHOD = f"/{HEALTH_SERVICE}/Check"
HEALTH_WATCH_METHOD = f"/{HEALTH_SERVICE}/Watch"
#: The Open Inference Protocol's gRPC service (KServe v2, Triton).
INFERENCE_SERVICE = "inference.GRPCInferenceService"

#: HealthCheckResponse.ServingStatus values.
SERVING_STATUS = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}

#: The signature every model exposes, as TF Serving names its default.
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
SIGNATURE_DEF_FIELD = "signature_def"


def _model_spec_probe() -> Any:
    """A message that reads ``model_spec`` (field 1 of PredictRequest and of
    GetModelMetadataRequest) with ModelSpec's ``version`` and ``version_label`` as two plain
    fields instead of a oneof.

    A oneof keeps the last of its fields on the wire, so a request that sets both parses as
    if it set one: only this second reading shows that a client sent both, which the
    protocol forbids. It lives in a pool of its own, apart from TF Serving's messages.
    """
    package = "accel_widgets.probe"
    messages = [
        _message("Present", []),
        _message(
            "SpecChoices",
            [_field("version", 2, f".{package}.Present"), _field("version_label", 4, "string")],
        ),
        _message("SpecOnly", [_field("model_spec", 1, f".{package}.SpecChoices")]),
    ]
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(
        _file("accel_widgets/probe.proto", package, [], messages=messages).SerializeToString()
    )
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.SpecOnly"))


#: See :func:`_model_spec_probe`: ``ModelSpecChoices.FromString(raw).model_spec`` has
#: ``HasField("version")`` and ``version_label`` as the client sent them.
ModelSpecChoices = _model_spec_probe()
