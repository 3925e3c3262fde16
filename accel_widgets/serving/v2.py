"""The Open Inference Protocol (KServe v2) in terms of our models, shared by gRPC and REST.

The protocol spells a tensor as ``name``, ``datatype`` (``FP32``, ``BYTES`` ...), ``shape``
and its data; this module turns that into what :class:`~accel_widgets.serving.model.
LoadedModel` takes (encoded images or a numeric array) and back, with the same refusals as
TF Serving's Predict. Data comes in three spellings, all checked against the shape before
anything is allocated: typed contents (gRPC ``contents.fp32_contents`` ..., REST ``data``),
raw little-endian bytes (gRPC ``raw_input_contents``, REST's binary tensor extension), and
for ``BYTES`` the raw form's 4-byte length prefix per element.

Inputs: the model's images input (``images``, its graph names, ``BYTES``: one encoded image
per element) or its pixels input (the ONNX input name, a preprocessed tensor). Outputs are
``FP32``, named as requested (alias or graph tensor name) or by their alias.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accel_widgets import __version__
from accel_widgets.serving.model import LoadedModel
from accel_widgets.serving.registry import ModelRegistry
from accel_widgets.serving.status import RequestError, echo

#: Numeric datatypes of the protocol -> numpy (little-endian, as the raw form is).
NUMERIC: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
DATATYPES = (*NUMERIC, BYTES)

#: Which typed-contents field holds each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

SERVER_NAME = "accel-widgets"
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class Tensor:
    """One input as the request described it, before its data is read."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        return f"input '{echo(self.name)}' ({self.datatype} {echo(list(self.shape))})"


def tensor(name: Any, datatype: Any, shape: Any) -> Tensor:
    """Check an input's header: a name, a known datatype, a shape of sizes >= 0."""
    if not isinstance(name, str) or not name:
        raise RequestError("INVALID_ARGUMENT", "every input needs a non-empty 'name'")
    if datatype not in DATATYPES:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"input '{echo(name)}' has datatype {echo(repr(datatype))}; use BYTES for encoded "
            f"images or one of {', '.join(NUMERIC)} for a preprocessed tensor",
        )
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestError(
            "INVALID_ARGUMENT",
            f"input '{echo(name)}' has shape {echo(repr(shape))}; a shape is a list of sizes >= 0",
        )
    return Tensor(name, datatype, tuple(shape))


def _check_size(model: LoadedModel, spec: Tensor) -> None:
    """Refuse a shape above the model's request limit before allocating anything."""
    limit = model.max_batch if spec.datatype == BYTES else model.max_elements
    if spec.elements > limit:
        what = "images" if spec.datatype == BYTES else "elements"
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()} holds {spec.elements:,} {what}; this server takes at most "
            f"{limit:,} per request to model '{model.name}'",
        )


def check_datatype(model: LoadedModel, spec: Tensor) -> None:
    """Refuse a datatype of the other kind than the model's metadata gives the input.

    The images input (``images`` and the original graph's names) is ``BYTES``: encoded
    images. The pixels input (the ONNX input name) is numeric: before this check, an FP32
    input sent as ``BYTES`` was decoded as images (issue 22). A numeric datatype other than
    the metadata's (FP32 for an FP16 model) is still taken when every value converts
    exactly (:meth:`LoadedModel.tensor_from_array`), as tritonclient users send FP32.
    Unknown names are left to the model, which answers with the list of its inputs.
    """
    if spec.name not in model.input_names:
        return
    pixels_type = _datatype(model.input_dtype)
    if spec.name == model.onnx_input and spec.datatype == BYTES:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()}: the metadata gives '{spec.name}' as {pixels_type} (a "
            f"preprocessed tensor); send encoded images as BYTES to "
            f"'{model.config.input_alias}'",
        )
    if spec.name != model.onnx_input and spec.datatype != BYTES:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()}: the metadata gives '{spec.name}' as BYTES (encoded images); "
            f"send a preprocessed tensor as {pixels_type} to '{model.onnx_input}'",
        )


def from_raw(model: LoadedModel, spec: Tensor, raw: bytes) -> np.ndarray | list[bytes]:
    """An input from its raw bytes (``raw_input_contents`` or the binary extension)."""
    check_datatype(model, spec)
    _check_size(model, spec)
    if spec.datatype == BYTES:
        return _split_bytes(spec, raw)
    dtype = NUMERIC[spec.datatype]
    if len(raw) != spec.elements * dtype.itemsize:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()} needs {spec.elements * dtype.itemsize:,} bytes of raw "
            f"contents ({spec.elements:,} x {dtype.itemsize}), but {len(raw):,} came",
        )
    return np.frombuffer(raw, dtype=dtype).reshape(spec.shape)


def from_values(
    model: LoadedModel, spec: Tensor, values: Sequence[Any], *, finite: bool = False
) -> Any:
    """An input from typed values (gRPC ``contents``, REST ``data``), flat or nested.

    ``finite``: refuse infinities and NaN, for JSON, where no number may be one (Python's
    parser reads ``1e400`` as infinity; a value too big for the datatype, such as 70000 as
    FP16, becomes one when cast).
    """
    check_datatype(model, spec)
    _check_size(model, spec)
    if spec.datatype == BYTES:
        items = list(flatten(values))
        if len(items) != spec.elements:
            raise _count_error(spec, len(items))
        if not all(isinstance(i, bytes) for i in items):
            raise RequestError("INVALID_ARGUMENT", f"{spec.describe()} must hold bytes")
        return items
    try:
        array = np.asarray(values, dtype=NUMERIC[spec.datatype])
    except (TypeError, ValueError, OverflowError) as exc:
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()} holds values that are not {spec.datatype}: {exc}",
        ) from None
    if array.size != spec.elements:
        raise _count_error(spec, array.size)
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(
            "INVALID_ARGUMENT",
            f"{spec.describe()} holds a number that is not a finite {spec.datatype} (too big "
            "for it, such as 1e400, or NaN); JSON numbers must be finite",
        )
    return array.reshape(spec.shape)


def flatten(values: Any) -> Any:
    """Leaves in order, without recursion: deep nesting cannot overflow the stack."""
    stack = [iter(values)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, (list, tuple)):
                stack.append(iter(value))
                break
            yield value
        else:
            stack.pop()


def _count_error(spec: Tensor, got: int) -> RequestError:
    return RequestError(
        "INVALID_ARGUMENT",
        f"{spec.describe()} has {spec.elements:,} elements by its shape, but its data holds "
        f"{got:,}",
    )


def _split_bytes(spec: Tensor, raw: bytes) -> list[bytes]:
    """The raw ``BYTES`` form: each element is a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"{spec.describe()}: raw BYTES contents end inside an element's 4-byte length",
            )
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"{spec.describe()}: a raw BYTES element says it has {size:,} bytes but only "
                f"{len(raw) - offset:,} remain",
            )
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != spec.elements:
        raise _count_error(spec, len(items))
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    """The raw ``BYTES`` form of ``items`` (what tritonclient sends)."""
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def infer(
    registry: ModelRegistry,
    model: LoadedModel,
    inputs: Sequence[tuple[Tensor, Any]],
    requested: Sequence[str],
) -> list[tuple[str, np.ndarray]]:
    """Score one request: exactly one input; outputs as requested, else every alias."""
    names = [spec.name for spec, _ in inputs]
    if len(names) != len(set(names)):
        raise RequestError("INVALID_ARGUMENT", f"inputs {names} name the same input twice")
    value_by_name = {spec.name: value for spec, value in inputs}
    wanted = list(requested) or [b.config.alias for b in model.outputs]
    outputs = registry.predict(model, value_by_name, wanted)
    return list(outputs.items())


def _datatype(dtype: np.dtype) -> str:
    for name, candidate in NUMERIC.items():
        if candidate == dtype.newbyteorder("<"):
            return name
    return str(dtype)


def parse_version(version: str) -> int | None:
    """A request's model version ("" = the one served) as our integer version."""
    if not version:
        return None
    if not version.isdigit():
        raise RequestError(
            "INVALID_ARGUMENT",
            f"model version {echo(version)!r} is not a number; leave it empty to use the one "
            "served",
        )
    return int(version)


def server_metadata(extensions: Sequence[str] = ()) -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(extensions)}


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """The model's v2 metadata; the two inputs are alternatives (send one of them)."""
    pixels = [-1 if d is None else d for d in model.input_shape]
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": PLATFORM,
        "inputs": [
            {"name": model.config.input_alias, "datatype": BYTES, "shape": [-1]},
            {"name": model.onnx_input, "datatype": _datatype(model.input_dtype), "shape": pixels},
        ],
        "outputs": [
            {"name": b.config.alias, "datatype": "FP32", "shape": b.response_shape}
            for b in model.outputs
        ],
    }
