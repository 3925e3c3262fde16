"""One loaded model: its ONNX Runtime session, its names, and request-to-tensor rules.

A model answers to several names because its users do: the signature alias (``images``,
``output_alias``) that TF Serving clients use, the legacy graph tensor names
(``Placeholder:0``, ``classifier/.../Softmax:0``) that old Azure notebooks pass, and the
ONNX names. Every refusal names what would have been accepted, because "wrong tensor
name" was the retired service's most cryptic error.
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from accel_widgets.errors import ImageError, ServingError
from accel_widgets.preprocess import prepare
from accel_widgets.serving import runtime, runtime_choice, runtime_race
from accel_widgets.serving.batching import DynamicBatcher
from accel_widgets.serving.config import (
    DEFAULT_OUTPUT_ALIAS,
    BatchingConfig,
    ModelConfig,
    OutputConfig,
)
from accel_widgets.serving.runtime_choice import RuntimeInfo
from accel_widgets.serving.status import RequestError, echo
from accel_widgets.serving.tensors import data_type_of, dtype_name

log = logging.getLogger("accel_widgets.serving")

#: ONNX tensor element types -> numpy.
ONNX_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class OutputBinding:
    """A configured output bound to its ONNX output."""

    config: OutputConfig
    shape: tuple[int | None, ...]

    @property
    def accepted_names(self) -> list[str]:
        return _unique([self.config.alias, *self.config.names, self.config.onnx_output])

    @property
    def response_shape(self) -> list[int]:
        """The shape clients receive, -1 for sizes known only at run time."""
        if self.config.postprocess in ("flatten", "softmax"):
            rest = self.shape[1:]
            known = all(isinstance(d, int) for d in rest)
            return [-1, math.prod(rest) if known else -1]  # type: ignore[arg-type]
        return [d if isinstance(d, int) else -1 for d in self.shape]


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _shape_text(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


class LoadedModel:
    """A model ready to score: built by :meth:`load`, used by many gRPC threads at once.

    ONNX Runtime's ``run`` is thread-safe, and everything else here is read-only after
    loading. Decoding runs fully in parallel; ``session.run`` is gated to ``max_runs``
    concurrent calls. The session already uses every core it was given, so more concurrent
    runs only fight over them: on 2 cores, 8 gRPC workers running ResNet-50 at once gave no
    more throughput, a p50 that grew with the number of clients, and ONNX Runtime's arena
    grew to hold 8 runs' activations (INT8 server RSS 160 -> 240 MB).
    """

    def __init__(
        self,
        config: ModelConfig,
        session: Any,
        *,
        max_pixels: int,
        max_batch: int,
        max_runs: int | None = None,
    ):
        self.config = config
        self.session = session
        self.max_runs = max_runs or runtime.concurrent_runs(session)
        self._run_gate = threading.BoundedSemaphore(self.max_runs)
        self.max_pixels = max_pixels
        self.max_batch = max_batch
        model_input = session.get_inputs()
        if len(model_input) != 1:
            names = ", ".join(i.name for i in model_input)
            raise ServingError(
                f"model {config.name!r}: the server scores models with one input; "
                f"{config.onnx} has {len(model_input)} ({names})"
            )
        self.onnx_input = model_input[0].name
        self.input_dtype = ONNX_TYPES.get(model_input[0].type)
        if self.input_dtype is None:
            raise ServingError(
                f"model {config.name!r}: input type {model_input[0].type} is not supported"
            )
        self.input_shape: tuple[int | None, ...] = tuple(
            d if isinstance(d, int) and d > 0 else None for d in model_input[0].shape
        )
        self.input_names = _unique([config.input_alias, *config.input_names, self.onnx_input])
        onnx_outputs = {o.name: o for o in session.get_outputs()}
        configured = config.outputs or _default_outputs(list(onnx_outputs))
        self.outputs: list[OutputBinding] = []
        for output in configured:
            if output.onnx_output not in onnx_outputs:
                raise ServingError(
                    f"model {config.name!r}: output {output.alias!r} names ONNX output "
                    f"{output.onnx_output!r}, which the model does not have; its outputs are "
                    f"{_quoted(list(onnx_outputs))}"
                )
            shape = tuple(
                d if isinstance(d, int) and d > 0 else None
                for d in onnx_outputs[output.onnx_output].shape
            )
            self.outputs.append(OutputBinding(output, shape))
        self._output_by_name: dict[str, OutputBinding] = {}
        for binding in self.outputs:
            for name in binding.accepted_names:
                self._output_by_name.setdefault(name, binding)
        self.labels = _read_labels(config)
        self.loaded_at = time.time()
        #: Which runtime serves and why (set by :meth:`load`); see runtime_choice.py.
        self.runtime_info: RuntimeInfo | None = None
        self.batcher: DynamicBatcher | None = None

    @classmethod
    def load(
        cls,
        config: ModelConfig,
        *,
        threads: int | None,
        max_pixels: int,
        max_batch: int,
        spinning: bool = True,
        runtime_name: str = "onnxruntime",
        device: str = "auto",
        batching: BatchingConfig | None = None,
    ) -> LoadedModel:
        """Open the runtime(s), check the preprocessing fits, warm up, and start batching.

        ``runtime_name`` is the config's ``runtime``: with ``auto`` every runtime that can
        read the model is raced on the warm-up tensor and the faster one is kept
        (``runtime_choice.py``). The race runs in a child process, or its earlier verdict is
        read back, so this process loads only the runtime it serves with
        (``runtime_race.py``); only when that fails does the race run here.
        :attr:`runtime_info` records the outcome and its figures.
        """
        if not config.onnx.is_file():
            raise ServingError(f"model {config.name!r}: ONNX file {config.onnx} does not exist")
        started = time.perf_counter()
        dynamic_batch = batching.max_batch_size if batching else 0
        verdict, notes = None, []
        if runtime_name == "auto" and runtime_race.wanted():
            settings = runtime_race.RaceSettings(
                threads, spinning, device, dynamic_batch, max_pixels, max_batch
            )
            try:
                verdict = runtime_race.choose(config, settings)
            except RuntimeError as exc:
                notes.append(f"auto: raced in the server itself: {exc}")
        try:
            candidates, opened = runtime_choice.open_candidates(
                config,
                asked=verdict.winner if verdict else runtime_name,
                device=device,
                threads=threads,
                spinning=spinning,
                dynamic_batch=dynamic_batch,
            )
        except ServingError as exc:
            raise ServingError(f"model {config.name!r}: {exc}") from None
        notes = (verdict.notes if verdict else []) + notes + opened
        model = cls(config, candidates[0].session, max_pixels=max_pixels, max_batch=max_batch)
        winner, measured = candidates[0], dict(verdict.measured_ms) if verdict else {}
        if len(candidates) > 1:
            batch = model.warm_up_batch()
            names = _unique([b.config.onnx_output for b in model.outputs])
            winner, measured = runtime_choice.race(
                candidates,
                lambda session: session.run(names, {model.onnx_input: batch}),
                notes=notes,
            )
            model._use_session(winner.session)
        model.runtime_info = runtime_choice.info_for(
            winner, runtime_name, notes, measured, verdict=verdict
        )
        del candidates  # the runtime that lost an in-process race frees its sessions now
        if batching is not None:
            model.start_batching(batching)
        raced_here = bool(measured) and verdict is None  # that race warmed the winner up
        model.warm_up(runs=1 if raced_here else 3)
        log.info(
            "model %s v%d loaded from %s in %.2f s: %s on %s (%s)%s",
            config.name,
            config.version,
            config.onnx,
            time.perf_counter() - started,
            model.runtime_info.runtime,
            model.runtime_info.device,
            model.runtime_info.chosen_by,
            "".join(f"; {note}" for note in model.runtime_info.notes),
        )
        return model

    def _use_session(self, session: Any) -> None:
        """Serve with ``session`` (``auto``'s winner; it has the same inputs and outputs)."""
        self.session = session
        self.max_runs = runtime.concurrent_runs(session)
        self._run_gate = threading.BoundedSemaphore(self.max_runs)

    def start_batching(self, batching: BatchingConfig) -> None:
        """Put a :class:`~accel_widgets.serving.batching.DynamicBatcher` before the runtime.

        A model whose input takes batch 1 only (the shared SqueezeNet) cannot run requests
        together, so batching stays off for it (logged).
        """
        if self.input_shape and self.input_shape[0] == 1:
            log.info("model %s: batching off, its input takes batch 1 only", self.name)
            return
        self.batcher = DynamicBatcher(
            self._run_session,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_us=batching.max_queue_delay_us,
            name=self.name,
        )

    def close(self) -> None:
        """Stop the batching worker (requests queued are served first)."""
        if self.batcher is not None:
            self.batcher.close()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def version(self) -> int:
        return self.config.version

    # -- warm-up ---------------------------------------------------------------------------

    def warm_up(self, runs: int = 3) -> None:
        """Run a real JPEG through decode, preprocessing and the model before going ready.

        The first runs of a session allocate memory arenas and pick kernels; doing them here
        keeps the first user's request as fast as the thousandth, and proves the configured
        preprocessing produces the tensor the model takes before the service says SERVING.
        With batching on, one run at the largest batch allocates for it too.
        """
        batch = self.warm_up_batch()
        for _ in range(runs):
            self.run(batch, self.outputs)
        if self.batcher is not None:
            full = np.repeat(batch, self.batcher.max_batch_size, axis=0)
            self._run_session(full, _unique([b.config.onnx_output for b in self.outputs]))

    def warm_up_batch(self) -> np.ndarray:
        """The model input for a synthetic JPEG, through this model's preprocessing."""
        size = max(self.config.preprocessing.short_side, self.config.preprocessing.size)
        buffer = io.BytesIO()
        gradient = np.linspace(0, 255, size * size * 3, dtype=np.float32)
        picture = gradient.reshape(size, size, 3).astype(np.uint8)
        Image.fromarray(picture).save(buffer, format="JPEG", quality=90)
        try:
            return self.tensor_from_images([buffer.getvalue()])
        except RequestError as exc:
            raise ServingError(
                f"model {self.name!r}: its preprocessing does not fit the model: {exc.message}"
            ) from None

    # -- names -----------------------------------------------------------------------------

    def check_input_name(self, name: str) -> None:
        if name not in self.input_names:
            raise RequestError(
                "INVALID_ARGUMENT",
                f"model '{self.name}' has no input '{echo(name)}'; inputs are "
                f"{_quoted(self.input_names)}",
            )

    @property
    def output_names(self) -> list[str]:
        return list(self._output_by_name)

    def resolve_outputs(self, requested: Sequence[str]) -> list[tuple[str, OutputBinding]]:
        """(response key, output) pairs: what the client asked for, or every name it may read.

        With no ``output_filter`` each output is answered under its alias *and* the graph
        tensor names of the model it came from (``classifier/resnet_v1_50/predictions/
        Softmax:0``): a client of the original service sends no filter and reads the
        response by the tensor name it saved at conversion; keyed by alias only, its lookup
        found a default ``TensorProto`` (dtype 0) and failed converting it. The ONNX output
        name is not added: it is ours, no client of the original service knows it.
        """
        if not requested:
            return [
                (name, b)
                for b in self.outputs
                for name in _unique([b.config.alias, *b.config.names])
            ]
        unknown = [n for n in requested if n not in self._output_by_name]
        if unknown:
            raise RequestError(
                "INVALID_ARGUMENT",
                f"model '{self.name}' has no output {_quoted([echo(n) for n in unknown[:5]])}; "
                "outputs are "
                f"{_quoted(self.output_names)}",
            )
        return [(n, self._output_by_name[n]) for n in _unique(list(requested))]

    # -- request tensors -------------------------------------------------------------------

    def tensor_from_images(self, images: Sequence[bytes]) -> np.ndarray:
        """Decode and preprocess a batch of encoded images into one model input."""
        if not images:
            raise RequestError(
                "INVALID_ARGUMENT", "the DT_STRING input holds no images; send one per element"
            )
        self._check_batch(len(images))
        tensors = []
        for index, data in enumerate(images):
            try:
                tensors.append(prepare(data, self.config.preprocessing, max_pixels=self.max_pixels))
            except ImageError as exc:
                code = "RESOURCE_EXHAUSTED" if exc.kind == "too_large" else "INVALID_ARGUMENT"
                where = f"image {index}: " if len(images) > 1 else ""
                raise RequestError(code, where + str(exc)) from None
        batch = tensors[0] if len(tensors) == 1 else np.concatenate(tensors)
        return self.tensor_from_array(batch, from_images=True)

    def tensor_from_array(self, array: np.ndarray, *, from_images: bool = False) -> np.ndarray:
        """Check a numeric input against the model's shape and dtype, casting when safe."""
        expected = _shape_text(self.input_shape)
        if array.ndim != len(self.input_shape) or any(
            want is not None and got != want and not (axis == 0 and want == 1)
            for axis, (got, want) in enumerate(zip(array.shape, self.input_shape, strict=False))
        ):
            hint = "" if from_images else "; send encoded images as DT_STRING instead"
            raise RequestError(
                "INVALID_ARGUMENT",
                f"input has shape {list(array.shape)} but model '{self.name}' takes "
                f"{expected} ({self.input_dtype}){hint}",
            )
        if array.shape[0] == 0 or 0 in array.shape:
            raise RequestError("INVALID_ARGUMENT", f"input has an empty shape {list(array.shape)}")
        self._check_batch(array.shape[0])
        if array.dtype != self.input_dtype:
            if not _converts_exactly(array, self.input_dtype):
                raise RequestError(
                    "INVALID_ARGUMENT",
                    f"input has dtype {array.dtype} but model '{self.name}' takes "
                    f"{self.input_dtype} {expected}, and these {array.dtype} values do not "
                    f"convert to {self.input_dtype} without changing",
                )
            array = array.astype(self.input_dtype)
        return np.ascontiguousarray(array)

    @property
    def max_elements(self) -> int:
        """The most elements a request tensor may expand to: ``max_batch`` full inputs.

        Passed to :func:`~accel_widgets.serving.tensors.tensor_to_numpy`, so a request that
        claims a huge shape with one fill value is refused before anything is allocated.
        """
        per_row = math.prod(d or 4096 for d in self.input_shape[1:])
        return self.max_batch * per_row

    def _check_batch(self, size: int) -> None:
        if size > self.max_batch:
            raise RequestError(
                "INVALID_ARGUMENT",
                f"a batch of {size} is above this server's limit of {self.max_batch} per "
                "request; split it into several requests",
            )

    # -- running ---------------------------------------------------------------------------

    def run(self, batch: np.ndarray, outputs: Sequence[OutputBinding]) -> dict[str, np.ndarray]:
        """Run the model; ONNX output name -> float32 array, postprocessed.

        A model exported with a fixed batch of 1 (the shared SqueezeNet) still takes a
        batch: rows run one at a time and the results are stacked.
        """
        names = _unique([b.config.onnx_output for b in outputs])
        try:
            if self.input_shape and self.input_shape[0] == 1 and batch.shape[0] > 1:
                rows = [self._run_once(batch[i : i + 1], names) for i in range(batch.shape[0])]
                results = [np.concatenate([r[k] for r in rows]) for k in range(len(names))]
            else:
                results = self._run_once(batch, names)
        except RequestError:
            raise
        except Exception as exc:  # the dynamic batcher's worker hands on the runtime's error
            raise runtime_failure(self.name, exc) from None
        by_name = dict(zip(names, results, strict=True))
        out: dict[str, np.ndarray] = {}
        for binding in outputs:
            value = by_name[binding.config.onnx_output]
            if binding.config.postprocess in ("flatten", "softmax"):
                value = value.reshape(value.shape[0], -1)
            if binding.config.postprocess == "softmax":  # a model that outputs logits
                value = value.astype(np.float64)
                value = np.exp(value - value.max(axis=1, keepdims=True))
                value /= value.sum(axis=1, keepdims=True)
            out[binding.config.onnx_output] = np.asarray(value, dtype=np.float32)
        return out

    def _run_once(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """One runtime call, through the dynamic batcher when batching is on."""
        if self.batcher is not None:
            return self.batcher.submit(batch, names)
        return self._run_session(batch, names)

    def _run_session(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        try:
            with self._run_gate:
                return self.session.run(names, {self.onnx_input: batch})
        except Exception as exc:
            raise runtime_failure(self.name, exc) from None

    def predict(
        self, input_name: str, value: Sequence[bytes] | np.ndarray, output_filter: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """One request: input by any accepted name, images or a tensor; keyed as asked."""
        self.check_input_name(input_name)
        wanted = self.resolve_outputs(output_filter)
        if isinstance(value, np.ndarray) and value.dtype != object:
            batch = self.tensor_from_array(value)
        else:
            images = list(value.reshape(-1)) if isinstance(value, np.ndarray) else list(value)
            batch = self.tensor_from_images(images)
        results = self.run(batch, [b for _, b in wanted])
        return {key: results[b.config.onnx_output] for key, b in wanted}

    # -- metadata --------------------------------------------------------------------------

    def signatures(self) -> dict[str, dict[str, Any]]:
        """TF Serving signatures for metadata: one per way of calling the model.

        ``serving_default`` takes ``DT_STRING`` images (the original service's contract);
        ``predict_pixels`` takes the preprocessed tensor under the ONNX input name. They are
        alternatives: a signature lists only inputs that are all required together, so
        listing both under one signature would tell TF Serving clients to send both.
        """
        numeric = [-1 if d is None else d for d in self.input_shape]
        # Every key a filterless Predict answers under (see resolve_outputs): the alias,
        # then each graph tensor name of the original model, so both kinds of client find
        # the key they read in the signature.
        outputs = {
            key: {"name": name, "dtype": "DT_FLOAT", "shape": b.response_shape}
            for b in self.outputs
            for key, name in [
                (b.config.alias, (b.config.names or (b.config.onnx_output,))[0]),
                *((n, n) for n in b.config.names if n != b.config.alias),
            ]
        }
        images = {
            "name": (self.config.input_names or (self.config.input_alias,))[0],
            "dtype": "DT_STRING",
            "shape": [-1],
        }
        pixels = {"name": self.onnx_input, "dtype": _dt_name(self.input_dtype), "shape": numeric}
        return {
            "serving_default": {"inputs": {self.config.input_alias: images}, "outputs": outputs},
            "predict_pixels": {"inputs": {self.onnx_input: pixels}, "outputs": outputs},
        }


#: Words with which ONNX Runtime, OpenVINO and the C++ runtime report running out of memory.
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|failed to allocate|out of memory|cannot allocate|allocation failed", re.I
)


def runtime_failure(model: str, exc: BaseException) -> RequestError:
    """The status for a runtime's failure while running a request: whose fault it is.

    Only the runtime's own *invalid argument* (a shape or type the graph cannot take, which
    the checks before it did not catch) is the client's: INVALID_ARGUMENT. Running out of
    memory is RESOURCE_EXHAUSTED (retry later, or send less); anything else, such as a
    kernel failing, is INTERNAL: the server's failure, logged with its reason, and never
    answered as if the request were wrong (the client would "fix" a correct request).
    """
    reason = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError) or _OUT_OF_MEMORY.search(str(exc)):
        log.error("model %s ran out of memory: %s", model, reason)
        return RequestError(
            "RESOURCE_EXHAUSTED",
            f"model '{model}' ran out of memory running this request; retry later or send "
            "a smaller batch",
        )
    if type(exc).__name__ in ("InvalidArgument", "INVALID_ARGUMENT"):
        return RequestError("INVALID_ARGUMENT", f"model '{model}' refused the input: {reason}")
    log.error("model %s failed while running: %s", model, reason)
    return RequestError(
        "INTERNAL",
        f"model '{model}' failed while running this request; the failure is the server's, "
        "not the request's (see the server log)",
    )


def _converts_exactly(array: np.ndarray, dtype: np.dtype) -> bool:
    """Whether casting changes nothing a model would notice; "when safe" made precise.

    Floats convert to any float width (float64 JSON numbers to a float16 model are the
    common case; rounding is what the client asked for). Integers convert when every value
    fits: to a float, within the range its mantissa holds exactly (2048 for float16, so
    0..255 pixels pass); to an integer, within its range. Everything else (floats to
    integers, booleans, complex, strings) is refused rather than guessed.
    """
    kind, target = array.dtype.kind, dtype.kind
    if kind == "f" and target == "f":
        return True
    if kind not in "iu" or target not in "iuf":
        return False
    if array.size == 0:
        return True
    low, high = int(array.min()), int(array.max())
    if target == "f":
        exact = 2 ** (np.finfo(dtype).nmant + 1)
        return -exact <= low and high <= exact
    info = np.iinfo(dtype)
    return info.min <= low and high <= info.max


def _dt_name(dtype: np.dtype) -> str:
    return dtype_name(data_type_of(dtype))


def _default_outputs(onnx_outputs: list[str]) -> tuple[OutputConfig, ...]:
    """No outputs configured: the only output is ``output_alias``; several keep their names."""
    if len(onnx_outputs) == 1:
        return (OutputConfig(alias=DEFAULT_OUTPUT_ALIAS, onnx_output=onnx_outputs[0]),)
    return tuple(OutputConfig(alias=name, onnx_output=name) for name in onnx_outputs)


def _read_labels(config: ModelConfig) -> list[str] | None:
    if config.labels is None:
        return None
    try:
        lines = config.labels.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ServingError(
            f"model {config.name!r}: cannot read labels file {config.labels}: {exc}"
        ) from None
    return [line.strip() for line in lines if line.strip()]
