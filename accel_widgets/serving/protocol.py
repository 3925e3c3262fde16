"""TensorFlow Serving's messages, built at import time from descriptors written in Python.

Why not generated ``_pb2`` modules: generated code checks the protobuf runtime it was
generated for and refuses to import under another major version (FINDINGS), and the
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
    return [types, shape, tensor, meta_graph, model, predict, metadata, service, health]


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

#: gRPC method paths, as ``channel.unary_unary`` and the generic handlers want them.
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
PREDICT_METHOD = f"/{PREDICTION_SERVICE}/Predict"
GET_MODEL_METADATA_METHOD = f"/{PREDICTION_SERVICE}/GetModelMetadata"
HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK_METHOD = f"/{HEALTH_SERVICE}/Check"
HEALTH_WATCH_METHOD = f"/{HEALTH_SERVICE}/Watch"

#: HealthCheckResponse.ServingStatus values.
SERVING_STATUS = {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2, "SERVICE_UNKNOWN": 3}

#: The signature every model exposes, as TF Serving names its default.
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
SIGNATURE_DEF_FIELD = "signature_def"
