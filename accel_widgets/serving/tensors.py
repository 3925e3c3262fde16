"""numpy arrays <-> ``tensorflow.TensorProto``, without TensorFlow.

``tf.make_tensor_proto`` and ``tf.make_ndarray`` would need all of TensorFlow in the serving
process; these two functions cover what a Predict call carries: ``DT_STRING`` (encoded
images) and the numeric types an image model takes or returns.

Requests arrive from untrusted clients, so :func:`tensor_to_numpy` checks every size
before allocating: a shape that claims more elements than the bytes sent, a negative
dimension, or a single "fill" value blown up to a billion elements is refused with a
:class:`TensorError` that names the problem, never a MemoryError.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from accel_widgets.serving.protocol import DATA_TYPE_NAMES, DATA_TYPES, TensorProto

#: numpy dtype for each DataType we read or write (little-endian, as TensorFlow writes).
NUMPY_TYPES: dict[int, np.dtype] = {
    DATA_TYPES["DT_FLOAT"]: np.dtype("<f4"),
    DATA_TYPES["DT_DOUBLE"]: np.dtype("<f8"),
    DATA_TYPES["DT_HALF"]: np.dtype("<f2"),
    DATA_TYPES["DT_UINT8"]: np.dtype("u1"),
    DATA_TYPES["DT_INT8"]: np.dtype("i1"),
    DATA_TYPES["DT_INT16"]: np.dtype("<i2"),
    DATA_TYPES["DT_UINT16"]: np.dtype("<u2"),
    DATA_TYPES["DT_INT32"]: np.dtype("<i4"),
    DATA_TYPES["DT_INT64"]: np.dtype("<i8"),
    DATA_TYPES["DT_UINT32"]: np.dtype("<u4"),
    DATA_TYPES["DT_UINT64"]: np.dtype("<u8"),
    DATA_TYPES["DT_BOOL"]: np.dtype("?"),
}

#: The ``*_val`` field that holds each DataType's values when ``tensor_content`` is empty.
_VALUE_FIELDS: dict[int, str] = {
    DATA_TYPES["DT_FLOAT"]: "float_val",
    DATA_TYPES["DT_DOUBLE"]: "double_val",
    DATA_TYPES["DT_HALF"]: "half_val",
    DATA_TYPES["DT_UINT8"]: "int_val",
    DATA_TYPES["DT_INT8"]: "int_val",
    DATA_TYPES["DT_INT16"]: "int_val",
    DATA_TYPES["DT_UINT16"]: "int_val",
    DATA_TYPES["DT_INT32"]: "int_val",
    DATA_TYPES["DT_INT64"]: "int64_val",
    DATA_TYPES["DT_UINT32"]: "uint32_val",
    DATA_TYPES["DT_UINT64"]: "uint64_val",
    DATA_TYPES["DT_BOOL"]: "bool_val",
}

DT_STRING = DATA_TYPES["DT_STRING"]

#: Outputs up to this many elements go into ``float_val`` like TF Serving's default, so
#: clients that read ``outputs[...].float_val`` directly keep working; bigger ones (detection
#: maps) go into ``tensor_content``, which serializes 20x faster. ``tf.make_ndarray`` and
#: :func:`tensor_to_numpy` read both.
FLOAT_VAL_LIMIT = 16_384

#: Default ceiling on the elements one request tensor may expand to (256 MB of float32).
MAX_ELEMENTS = 64 * 1024 * 1024


class TensorError(ValueError):
    """A TensorProto that cannot become an array; the message names the field at fault."""


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` for 1, and a readable ``DataType 99`` for numbers TensorFlow never used."""
    return DATA_TYPE_NAMES.get(dtype, f"DataType {dtype}")


def data_type_of(dtype: np.dtype | str) -> int:
    """The DataType number for a numpy dtype (``float32`` -> ``DT_FLOAT``)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "SOU":
        return DT_STRING
    for number, np_type in NUMPY_TYPES.items():
        if np_type == dtype.newbyteorder("<") or np_type == dtype:
            return number
    raise TensorError(
        f"numpy dtype {dtype} has no TensorFlow DataType here; use one of "
        + ", ".join(str(t) for t in NUMPY_TYPES.values())
    )


def make_tensor_proto(
    value: np.ndarray | bytes | Sequence[bytes] | Iterable[Any],
    *,
    dtype: np.dtype | str | None = None,
    use_tensor_content: bool = True,
) -> Any:
    """Build a ``TensorProto`` from an array, one ``bytes`` object, or a list of them.

    Bytes become ``DT_STRING`` of shape ``[N]`` (one encoded image each), the shape the
    retired Azure service and TF Serving image models take. Numeric arrays go into
    ``tensor_content`` (raw little-endian bytes, the fast path) unless
    ``use_tensor_content`` is False, which fills the typed ``*_val`` field instead.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = [bytes(value)]
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (bytes, bytearray, memoryview)) for v in value
    ):
        proto = TensorProto(dtype=DT_STRING)
        proto.tensor_shape.dim.add(size=len(value))
        proto.string_val.extend(bytes(v) for v in value)
        return proto
    array = np.asarray(value, dtype=dtype)
    number = data_type_of(array.dtype)
    proto = TensorProto(dtype=number)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    if number == DT_STRING:
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        proto.string_val.extend(flat)
        return proto
    little = np.ascontiguousarray(array, dtype=NUMPY_TYPES[number])
    if use_tensor_content:
        proto.tensor_content = little.tobytes()
        return proto
    flat = little.reshape(-1)
    field = _VALUE_FIELDS[number]
    if field == "half_val":
        getattr(proto, field).extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def output_tensor_proto(array: np.ndarray) -> Any:
    """A response tensor: float32, in ``float_val`` when small (TF Serving's habit)."""
    array = np.asarray(array, dtype=np.float32)
    return make_tensor_proto(array, use_tensor_content=array.size > FLOAT_VAL_LIMIT)


def tensor_shape(proto: Any) -> tuple[int, ...]:
    """The shape a TensorProto claims, checked: no unknown rank, no negative dimension."""
    if proto.tensor_shape.unknown_rank:
        raise TensorError("tensor_shape.unknown_rank is set; send a tensor with a known shape")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise TensorError(f"tensor_shape {list(shape)} has a negative dimension")
    return shape


def tensor_strings(proto: Any) -> list[bytes]:
    """The ``string_val`` items of a ``DT_STRING`` tensor, checked against its shape."""
    if proto.dtype != DT_STRING:
        raise TensorError(f"expected a DT_STRING tensor; got {dtype_name(proto.dtype)}")
    shape = tensor_shape(proto)
    values = list(proto.string_val)
    count = math.prod(shape)
    if shape and count != len(values):
        raise TensorError(
            f"tensor_shape {list(shape)} holds {count} strings but string_val has {len(values)}"
        )
    return values


def tensor_to_numpy(proto: Any, *, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """Read a TensorProto into a numpy array (``DT_STRING`` gives an object array of bytes).

    Accepts what TensorFlow writes: raw ``tensor_content``, a full typed ``*_val`` field, or a
    single ``*_val`` value repeated to fill the shape.

    Raises
    ------
    TensorError
        For an unsupported dtype, a shape that does not match the values sent, or a tensor
        above ``max_elements``.
    """
    if proto.dtype == DT_STRING:
        values = tensor_strings(proto)
        shape = tensor_shape(proto) or (len(values),)
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    np_type = NUMPY_TYPES.get(proto.dtype)
    if np_type is None:
        supported = ", ".join(["DT_STRING", *(dtype_name(n) for n in NUMPY_TYPES)])
        raise TensorError(
            f"dtype {dtype_name(proto.dtype)} is not supported; use one of {supported}"
        )
    shape = tensor_shape(proto)
    count = math.prod(shape)
    if count > max_elements:
        raise TensorError(
            f"tensor_shape {list(shape)} has {count:,} elements; the limit is {max_elements:,}"
        )
    if proto.tensor_content:
        content = proto.tensor_content
        expected = count * np_type.itemsize
        if len(content) != expected:
            raise TensorError(
                f"tensor_content has {len(content):,} bytes but tensor_shape {list(shape)} of "
                f"{dtype_name(proto.dtype)} needs {expected:,}"
            )
        return (
            np.frombuffer(content, dtype=np_type).reshape(shape).astype(np_type.newbyteorder("="))
        )
    field = _VALUE_FIELDS[proto.dtype]
    values = getattr(proto, field)
    if field == "half_val":
        flat = np.asarray(values, dtype=np.int64).astype(np.uint16).view(np.float16)
    elif field == "int_val":
        # int_val carries int8/16, uint8/16 and int32 alike as int32: check the range before
        # narrowing, since numpy would wrap 300 to 44 for uint8 without a word.
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(np_type)
        if wide.size and (int(wide.min()) < info.min or int(wide.max()) > info.max):
            raise TensorError(
                f"int_val holds values outside {dtype_name(proto.dtype)}'s range "
                f"{info.min}..{info.max}"
            )
        flat = wide.astype(np_type.newbyteorder("="))
    else:
        flat = np.asarray(values, dtype=np_type.newbyteorder("="))
    if len(flat) == count:
        return flat.reshape(shape)
    if len(flat) == 1 and count > 1:
        return np.full(shape, flat[0], dtype=flat.dtype)
    raise TensorError(
        f"{field} has {len(flat):,} values but tensor_shape {list(shape)} needs {count:,}"
        + ("; send the values in tensor_content or the typed *_val field" if not flat.size else "")
    )
