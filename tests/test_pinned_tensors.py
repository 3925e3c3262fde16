"""TensorProto <-> numpy at its edges: every spelling TensorFlow writes, and every refusal.

Requests come from any TF Serving client (ours, the official one, the retired Azure one):
values in ``tensor_content`` or a typed ``*_val`` field, one value that fills the shape,
strings for images. These tests pin, in both directions, what each spelling becomes and the
exact limits: the element ceiling at N and N+1, ``int_val`` ranges at the edges of each
integer type, ``float_val`` for outputs up to 16,384 elements and ``tensor_content`` above.
"""

from __future__ import annotations

import numpy as np
import pytest

from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import (
    FLOAT_VAL_LIMIT,
    TensorError,
    data_type_of,
    dtype_name,
    make_tensor_proto,
    output_tensor_proto,
    tensor_shape,
    tensor_strings,
    tensor_to_numpy,
)

DT = protocol.DATA_TYPES


def _tensor(dtype: str, shape: tuple[int, ...], **fields) -> protocol.TensorProto:
    proto = protocol.TensorProto(dtype=DT[dtype], **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_data_types_by_numpy_dtype_in_either_byte_order():
    assert data_type_of(np.dtype(">f4")) == data_type_of("<f4") == DT["DT_FLOAT"]
    assert data_type_of(">i8") == DT["DT_INT64"]
    assert data_type_of("bool") == DT["DT_BOOL"]
    for text in ("S3", "U3", "O"):
        assert data_type_of(text) == DT["DT_STRING"]
    with pytest.raises(TensorError) as refused:
        data_type_of("complex64")
    assert str(refused.value).startswith("numpy dtype complex64 has no TensorFlow DataType here; ")
    assert "float32, float64, float16, uint8" in str(refused.value)


def test_dtype_names_for_known_and_unknown_numbers():
    assert dtype_name(DT["DT_HALF"]) == "DT_HALF"
    assert dtype_name(99) == "DataType 99"


def test_bytes_in_any_form_become_one_string_element():
    for data in (b"\xff\xd8jpeg", bytearray(b"\xff\xd8jpeg"), memoryview(b"\xff\xd8jpeg")):
        proto = make_tensor_proto(data)
        assert proto.dtype == DT["DT_STRING"]
        assert [d.size for d in proto.tensor_shape.dim] == [1]
        assert list(proto.string_val) == [b"\xff\xd8jpeg"]
    proto = make_tensor_proto((b"a", bytearray(b"b")))
    assert list(proto.string_val) == [b"a", b"b"]


def test_text_arrays_become_strings_of_their_shape():
    proto = make_tensor_proto(np.array([["ab", "c"], ["d", "é"]]))
    assert proto.dtype == DT["DT_STRING"]
    assert [d.size for d in proto.tensor_shape.dim] == [2, 2]
    assert list(proto.string_val) == [b"ab", b"c", b"d", "é".encode()]
    assert tensor_to_numpy(proto).tolist() == [[b"ab", b"c"], [b"d", "é".encode()]]


@pytest.mark.parametrize(
    ("dtype", "field"),
    [
        ("float16", "half_val"),
        ("int8", "int_val"),
        ("uint16", "int_val"),
        ("int64", "int64_val"),
        ("uint32", "uint32_val"),
        ("uint64", "uint64_val"),
        ("bool", "bool_val"),
        ("float64", "double_val"),
    ],
)
def test_each_type_round_trips_through_its_typed_field(dtype, field):
    array = (np.arange(6).reshape(2, 3) % 2 == 0) if dtype == "bool" else np.arange(6).reshape(2, 3)
    array = array.astype(dtype)
    proto = make_tensor_proto(array, use_tensor_content=False)
    assert not proto.tensor_content and len(getattr(proto, field)) == 6
    if field == "half_val":  # TensorFlow keeps float16 as its 16 bits in an int field
        assert list(proto.half_val) == array.reshape(-1).view(np.uint16).tolist()
    back = tensor_to_numpy(protocol.TensorProto.FromString(proto.SerializeToString()))
    assert back.dtype == array.dtype and back.tolist() == array.tolist()


def test_a_dtype_given_casts_the_values():
    proto = make_tensor_proto([1.5, 2.5], dtype="float16")
    assert proto.dtype == DT["DT_HALF"]
    assert tensor_to_numpy(proto).tolist() == [1.5, 2.5]


def test_big_endian_tensor_content_is_read_in_the_machines_order():
    proto = _tensor("DT_FLOAT", (2,), tensor_content=np.array([1.5, -2.0], "<f4").tobytes())
    back = tensor_to_numpy(proto)
    assert back.dtype == np.dtype("float32") and back.dtype.isnative
    assert back.tolist() == [1.5, -2.0]
    sent = make_tensor_proto(np.array([1.5, -2.0], ">f4"))
    assert sent.tensor_content == np.array([1.5, -2.0], "<f4").tobytes()


@pytest.mark.parametrize("size", [FLOAT_VAL_LIMIT, FLOAT_VAL_LIMIT + 1])
def test_outputs_up_to_16384_values_go_in_float_val_and_bigger_in_tensor_content(size):
    proto = output_tensor_proto(np.arange(size, dtype=np.float64).reshape(1, -1))
    assert proto.dtype == DT["DT_FLOAT"]
    assert [d.size for d in proto.tensor_shape.dim] == [1, size]
    if size <= FLOAT_VAL_LIMIT:
        assert len(proto.float_val) == size and not proto.tensor_content
    else:
        assert len(proto.tensor_content) == 4 * size and not proto.float_val
    assert tensor_to_numpy(proto)[0, -1] == size - 1


def test_shapes_must_be_known_and_not_negative():
    proto = _tensor("DT_FLOAT", ())
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(TensorError) as refused:
        tensor_shape(proto)
    assert str(refused.value) == (
        "tensor_shape.unknown_rank is set; send a tensor with a known shape"
    )
    with pytest.raises(TensorError) as refused:
        tensor_shape(_tensor("DT_FLOAT", (2, -1)))
    assert str(refused.value) == "tensor_shape [2, -1] has a negative dimension"
    assert tensor_shape(_tensor("DT_FLOAT", (0, 3))) == (0, 3)


def test_strings_must_match_their_shape_unless_it_is_left_out():
    assert tensor_strings(_tensor("DT_STRING", (), string_val=[b"a", b"b"])) == [b"a", b"b"]
    assert tensor_to_numpy(_tensor("DT_STRING", (), string_val=[b"a", b"b"])).shape == (2,)
    with pytest.raises(TensorError) as refused:
        tensor_strings(_tensor("DT_STRING", (3,), string_val=[b"a", b"b"]))
    assert str(refused.value) == "tensor_shape [3] holds 3 strings but string_val has 2"
    with pytest.raises(TensorError) as refused:
        tensor_strings(_tensor("DT_FLOAT", (1,), float_val=[1.0]))
    assert str(refused.value) == "expected a DT_STRING tensor; got DT_FLOAT"


def test_unsupported_dtypes_are_named_with_the_supported_ones():
    with pytest.raises(TensorError) as refused:
        tensor_to_numpy(_tensor("DT_COMPLEX64", (1,)))
    message = str(refused.value)
    assert message.startswith("dtype DT_COMPLEX64 is not supported; use one of DT_STRING, DT_FLOAT")
    assert message.endswith("DT_BOOL")


@pytest.mark.parametrize("count", [12, 13])
def test_the_element_ceiling_takes_n_and_refuses_n_plus_1(count):
    proto = _tensor("DT_FLOAT", (count,), float_val=[1.0])
    if count <= 12:
        assert tensor_to_numpy(proto, max_elements=12).tolist() == [1.0] * count
        return
    with pytest.raises(TensorError) as refused:
        tensor_to_numpy(proto, max_elements=12)
    assert str(refused.value) == "tensor_shape [13] has 13 elements; the limit is 12"


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        ("DT_UINT8", 0, 255),
        ("DT_INT8", -128, 127),
        ("DT_UINT16", 0, 65535),
        ("DT_INT16", -32768, 32767),
    ],
)
def test_int_val_takes_each_types_whole_range_and_nothing_past_it(dtype, low, high):
    proto = _tensor(dtype, (2,), int_val=[low, high])
    assert tensor_to_numpy(proto).tolist() == [low, high]
    for bad in (low - 1, high + 1):
        with pytest.raises(TensorError) as refused:
            tensor_to_numpy(_tensor(dtype, (2,), int_val=[0, bad]))
        assert str(refused.value) == f"int_val holds values outside {dtype}'s range {low}..{high}"


def test_one_value_fills_the_shape_and_a_wrong_count_is_refused_with_a_hint():
    assert tensor_to_numpy(_tensor("DT_INT32", (2, 2), int_val=[7])).tolist() == [[7, 7], [7, 7]]
    assert tensor_to_numpy(_tensor("DT_HALF", (3,), half_val=[15360])).tolist() == [1.0] * 3
    assert tensor_to_numpy(_tensor("DT_FLOAT", (1,), float_val=[2.0])).tolist() == [2.0]
    with pytest.raises(TensorError) as refused:
        tensor_to_numpy(_tensor("DT_FLOAT", (3,), float_val=[1.0, 2.0]))
    assert str(refused.value) == "float_val has 2 values but tensor_shape [3] needs 3"
    with pytest.raises(TensorError) as refused:
        tensor_to_numpy(_tensor("DT_FLOAT", (3,)))
    assert str(refused.value) == (
        "float_val has 0 values but tensor_shape [3] needs 3; send the values in "
        "tensor_content or the typed *_val field"
    )
    assert tensor_to_numpy(_tensor("DT_FLOAT", (0,))).shape == (0,)


@pytest.mark.parametrize(("dtype", "itemsize"), [("DT_FLOAT", 4), ("DT_HALF", 2), ("DT_INT64", 8)])
def test_a_tensor_content_of_the_wrong_size_names_both_counts_and_the_type(dtype, itemsize):
    for sent in (2 * itemsize - 1, 2 * itemsize + 1):
        proto = _tensor(dtype, (2,), tensor_content=b"\0" * sent)
        with pytest.raises(TensorError) as refused:
            tensor_to_numpy(proto)
        assert str(refused.value) == (
            f"tensor_content has {sent:,} bytes but tensor_shape [2] of {dtype} needs "
            f"{2 * itemsize:,}"
        )


def test_one_value_fills_a_shape_of_two_and_keeps_its_type():
    """The smallest fill: TensorFlow writes ``[x, x]`` as a single ``x``."""
    filled = tensor_to_numpy(_tensor("DT_FLOAT", (2,), float_val=[0.5]))
    assert filled.tolist() == [0.5, 0.5] and filled.dtype == np.float32
    filled = tensor_to_numpy(_tensor("DT_UINT64", (1, 2), uint64_val=[2**63 + 1]))
    assert filled.tolist() == [[2**63 + 1] * 2] and filled.dtype == np.uint64


@pytest.mark.parametrize("dtype", ["S", "O"])
def test_byte_string_arrays_keep_their_bytes(dtype):
    """An array of byte strings (numpy ``S`` or objects) goes out as those bytes, not as
    their Python spelling ``b'...'``."""
    proto = make_tensor_proto(np.array([[b"\xff\xd8a", b"b"]], dtype=dtype))
    assert proto.dtype == DT["DT_STRING"]
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    assert list(proto.string_val) == [b"\xff\xd8a", b"b"]
