"""The wire protocol: .proto files vs runtime descriptors, tensors, and a TensorFlow-free server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import (
    TensorError,
    make_tensor_proto,
    output_tensor_proto,
    tensor_to_numpy,
)

PROTOS = Path(protocol.__file__).parent / "protos"


def _compile_protos(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    grpc_tools = pytest.importorskip("grpc_tools")

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    out = tmp_path / "protos.pb"
    # In a child process: protoc's C++ runtime crashes when TensorFlow's (loaded by other
    # tests in the same pytest run) is already in this process.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            *files,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"protoc failed on accel_widgets/serving/protos: {done.stderr}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _shape(proto: descriptor_pb2.FileDescriptorProto) -> dict:
    """What must agree between the .proto text and the runtime: every wire-relevant fact."""

    def message(m: descriptor_pb2.DescriptorProto) -> dict:
        return {
            "fields": sorted(
                (
                    f.name,
                    f.number,
                    f.type,
                    f.label,
                    f.type_name,
                    f.HasField("oneof_index") and m.oneof_decl[f.oneof_index].name,
                    f.options.packed,
                )
                for f in m.field
            ),
            "nested": {n.name: message(n) for n in m.nested_type},
            "map_entry": m.options.map_entry,
            "enums": {e.name: sorted((v.name, v.number) for v in e.value) for e in m.enum_type},
        }

    return {
        "package": proto.package,
        "dependencies": sorted(proto.dependency),
        "messages": {m.name: message(m) for m in proto.message_type},
        "enums": {e.name: sorted((v.name, v.number) for v in e.value) for e in proto.enum_type},
        "services": {
            s.name: sorted(
                (m.name, m.input_type, m.output_type, m.server_streaming) for m in s.method
            )
            for s in proto.service
        },
    }


def test_proto_files_and_runtime_descriptors_agree(tmp_path):
    compiled = {f.name: f for f in _compile_protos(tmp_path).file}
    runtime = {f.name: f for f in protocol.file_descriptor_protos()}
    assert set(runtime) == set(compiled)
    for name, proto in runtime.items():
        assert _shape(proto) == _shape(compiled[name]), name


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        ("tensorflow.TensorProto", "dtype", 1),
        ("tensorflow.TensorProto", "tensor_shape", 2),
        ("tensorflow.TensorProto", "tensor_content", 4),
        ("tensorflow.TensorProto", "float_val", 5),
        ("tensorflow.TensorProto", "string_val", 8),
        ("tensorflow.TensorProto", "int64_val", 10),
        ("tensorflow.TensorProto", "half_val", 13),
        ("tensorflow.TensorShapeProto", "dim", 2),
        ("tensorflow.TensorInfo", "dtype", 2),
        ("tensorflow.serving.ModelSpec", "signature_name", 3),
        ("tensorflow.serving.ModelSpec", "version_label", 4),
        ("tensorflow.serving.PredictRequest", "inputs", 2),
        ("tensorflow.serving.PredictRequest", "output_filter", 3),
        ("tensorflow.serving.PredictResponse", "outputs", 1),
        ("tensorflow.serving.PredictResponse", "model_spec", 2),
        ("tensorflow.serving.GetModelMetadataResponse", "metadata", 2),
    ],
)
def test_field_numbers_are_tf_servings(message, field, number):
    descriptor = protocol.POOL.FindMessageTypeByName(message)
    assert descriptor.fields_by_name[field].number == number


def test_data_type_numbers_are_tensorflows():
    assert protocol.DATA_TYPES["DT_FLOAT"] == 1
    assert protocol.DATA_TYPES["DT_UINT8"] == 4
    assert protocol.DATA_TYPES["DT_STRING"] == 7
    assert protocol.DATA_TYPES["DT_INT64"] == 9
    assert protocol.DATA_TYPES["DT_HALF"] == 19


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "uint8", "int32", "int64"])
@pytest.mark.parametrize("content", [True, False])
def test_numeric_tensors_round_trip(dtype, content):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    proto = make_tensor_proto(array, use_tensor_content=content)
    wire = protocol.TensorProto.FromString(proto.SerializeToString())
    back = tensor_to_numpy(wire)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_string_tensors_hold_encoded_images():
    proto = make_tensor_proto([b"\xff\xd8one", b"two"])
    assert proto.dtype == protocol.DATA_TYPES["DT_STRING"]
    assert [d.size for d in proto.tensor_shape.dim] == [2]
    assert tensor_to_numpy(proto).tolist() == [b"\xff\xd8one", b"two"]


def test_single_value_fills_the_shape_like_tensorflow():
    proto = protocol.TensorProto(dtype=protocol.DATA_TYPES["DT_FLOAT"], float_val=[2.5])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(tensor_to_numpy(proto), np.full((2, 3), 2.5, np.float32))


def test_small_outputs_use_float_val_like_tf_serving_and_large_use_tensor_content():
    small = output_tensor_proto(np.ones((1, 1000)))
    assert len(small.float_val) == 1000 and not small.tensor_content
    large = output_tensor_proto(np.ones((1, 100_000)))
    assert len(large.tensor_content) == 400_000 and not large.float_val


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda p: p.tensor_shape.dim.add(size=-3), "negative dimension"),
        (lambda p: p.tensor_shape.dim.add(size=10**9), "limit"),
        (lambda p: (p.tensor_shape.dim.add(size=4), p.float_val.extend([1, 2])), "needs 4"),
        (
            lambda p: (p.tensor_shape.dim.add(size=4), setattr(p, "tensor_content", b"abc")),
            "tensor_content has 3 bytes",
        ),
        (lambda p: setattr(p, "dtype", 8), "not supported"),
    ],
)
def test_malformed_tensors_raise_tensor_error(build, words):
    proto = protocol.TensorProto(dtype=protocol.DATA_TYPES["DT_FLOAT"])
    build(proto)
    with pytest.raises(TensorError, match=words):
        tensor_to_numpy(proto, max_elements=10_000)


def test_int_val_out_of_range_is_refused_not_wrapped():
    proto = protocol.TensorProto(dtype=protocol.DATA_TYPES["DT_UINT8"], int_val=[300])
    proto.tensor_shape.dim.add(size=1)
    with pytest.raises(TensorError, match="range"):
        tensor_to_numpy(proto)


def test_serving_process_imports_no_tensorflow_or_jupyter():
    """The serving modules must run in a container with neither TensorFlow nor Jupyter."""
    code = (
        "import sys\n"
        "import accel_widgets.serving.server, accel_widgets.serving.__main__\n"
        "import accel_widgets.preprocess, accel_widgets.engine.clients.grpc_client\n"
        "banned = ('tensorflow', 'tf2onnx', 'keras', 'ipywidgets', 'jupyter', 'jupyter_client',"
        " 'IPython', 'ipykernel', 'onnx')\n"
        "found = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "assert 'tensorflow' not in sys.modules, found\n"
        "assert not found, found\n"
        "print('clean')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout
