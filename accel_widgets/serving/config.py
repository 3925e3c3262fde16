"""The serving process's configuration file: what to load and how to guard it.

The engine's deploy step writes this JSON (through :meth:`ServerConfig.write`, so the keys
and the checks live in one place) and starts ``python -m accel_widgets.serving --config
FILE``. Every key but ``models`` is optional::

    {
      "models": [
        {
          "name": "squeezenet",            # [A-Za-z0-9._-], used in REST paths
          "version": 1,                    # ModelSpec.version; a request may leave it out
          "onnx": "/abs/model.onnx",       # relative paths are relative to the config file
          "precision": "fp16",             # fp32 | fp16 | int8 (informational, in metadata)
          "preprocessing": {...},          # Preprocessing.to_dict(); defaults if left out
          "input_alias": "images",         # the signature's input name (TF Serving's)
          "input_names": ["Placeholder:0", "images:0"],   # legacy names also accepted
          "outputs": [                     # left out: every ONNX output, the only one
            {                              # aliased "output_alias"
              "alias": "output_alias",
              "onnx_output": "softmaxout_1",
              "names": ["classifier/resnet_v1_50/predictions/Softmax:0"],
              "postprocess": "flatten"     # none | flatten (to [N, -1]) | softmax (flatten,
                                           # then softmax: for models that output logits)
            }
          ],
          "labels": "/abs/labels.txt",     # or null; shown in REST metadata
          "bf16": false                    # OpenVINO may compute in bf16 (set only where
                                           # bf16 agreed with fp32 on the real photos)
        }
      ],
      "default_model": "squeezenet",       # for requests with an empty model name; else first
      "api_keys_file": "/abs/keys",        # one key per line, 0600; null = no auth (loopback only)
      "tls": {"cert": "/abs/cert.pem", "key": "/abs/key.pem"},   # or null
      "max_message_mb": 16,                # gRPC and REST body limit, both directions
      "threads": null,                     # ONNX Runtime intra-op threads; null = measured default
      "spinning": true,                    # ONNX Runtime pool threads spin between ops (runtime.py)
      "workers": null,                     # gRPC worker threads; null = max(8, 4 x CPUs)
      "max_batch": 32,                     # images (rows) in one request
      "max_pixels": 50000000,              # decompression-bomb limit per image
      "runtime": "onnxruntime",            # auto | onnxruntime | openvino (runtime_choice.py)
      "device": "auto",                    # auto | cpu | gpu (gpu absent: CPU, noted)
      "batching": null                     # or {"max_batch_size": 8, "max_queue_delay_us":
                                           # 2000}: dynamic batching (batching.py), off
    }

Unknown keys are refused so a typo ("api_key_file") fails at start-up instead of silently
turning authentication off.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accel_widgets.errors import ServingError
from accel_widgets.preprocess import MAX_PIXELS, Preprocessing

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PRECISIONS = ("fp32", "fp16", "int8")
POSTPROCESS = ("none", "flatten", "softmax")
DEFAULT_INPUT_ALIAS = "images"
DEFAULT_OUTPUT_ALIAS = "output_alias"
#: Written beside the ready file when a server stops by itself (why, and when: an idle
#: time-out, ``server.py``); the engine reads it to say why a service is no longer running.
STOPPED_FILE = "stopped.json"
#: How the log line of an idle stop begins (a container's target reads it from the logs).
IDLE_LOG_PREFIX = "stopping: no request for"
RUNTIMES = ("auto", "onnxruntime", "openvino")  # serving/runtime_choice.py
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class OutputConfig:
    """One model output: the alias clients ask for, the ONNX tensor, and legacy names."""

    alias: str
    onnx_output: str
    names: tuple[str, ...] = ()
    postprocess: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "onnx_output": self.onnx_output,
            "names": list(self.names),
            "postprocess": self.postprocess,
        }


@dataclass(frozen=True)
class ModelConfig:
    """One model the server loads; see the module docstring for each key."""

    name: str
    onnx: Path
    version: int = 1
    precision: str = "fp32"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    input_alias: str = DEFAULT_INPUT_ALIAS
    input_names: tuple[str, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    labels: Path | None = None
    bf16: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "onnx": str(self.onnx),
            "precision": self.precision,
            "preprocessing": self.preprocessing.to_dict(),
            "input_alias": self.input_alias,
            "input_names": list(self.input_names),
            "outputs": [o.to_dict() for o in self.outputs],
            "labels": str(self.labels) if self.labels else None,
            "bf16": self.bf16,
        }


@dataclass(frozen=True)
class TlsConfig:
    """PEM certificate chain and private key for gRPC and REST."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching (Triton's): requests that arrive together run as one batch.

    ``max_batch_size`` rows at most per run; the first request waits at most
    ``max_queue_delay_us`` microseconds for others to join it.
    """

    max_batch_size: int = 8
    max_queue_delay_us: int = 2000

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
        }


@dataclass(frozen=True)
class ServerConfig:
    """The whole file; build with :meth:`load` or :meth:`from_dict`, save with :meth:`write`."""

    models: tuple[ModelConfig, ...]
    default_model: str = ""
    api_keys_file: Path | None = None
    tls: TlsConfig | None = None
    max_message_mb: int = 16
    threads: int | None = None
    spinning: bool = True
    workers: int | None = None
    max_batch: int = 32
    max_pixels: int = MAX_PIXELS
    runtime: str = "onnxruntime"
    device: str = "auto"
    batching: BatchingConfig | None = None

    def __post_init__(self) -> None:
        if not self.default_model and self.models:
            object.__setattr__(self, "default_model", self.models[0].name)

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [m.to_dict() for m in self.models],
            "default_model": self.default_model,
            "api_keys_file": str(self.api_keys_file) if self.api_keys_file else None,
            "tls": {"cert": str(self.tls.cert), "key": str(self.tls.key)} if self.tls else None,
            "max_message_mb": self.max_message_mb,
            "threads": self.threads,
            "spinning": self.spinning,
            "workers": self.workers,
            "max_batch": self.max_batch,
            "max_pixels": self.max_pixels,
            "runtime": self.runtime,
            "device": self.device,
            "batching": self.batching.to_dict() if self.batching else None,
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temporary file + rename): a server never reads half a config."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerConfig:
        """Read and check a config file; relative paths are relative to its folder.

        Raises
        ------
        ServingError
            Naming the file, the key at fault and the valid values.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ServingError(f"config file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ServingError(f"config file {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except ServingError as exc:
            raise ServingError(f"config file {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | os.PathLike[str] = ".") -> ServerConfig:
        """Check a config dict (see the module docstring) and build the dataclasses."""
        base = Path(base_dir)
        _object(data, "the config", set(_SERVER_KEYS), required={"models"})
        models_data = data["models"]
        if not isinstance(models_data, list) or not models_data:
            raise ServingError("models must be a non-empty list of model objects")
        models = tuple(_model(m, f"models[{i}]", base) for i, m in enumerate(models_data))
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ServingError(f"models: duplicate model name(s) {', '.join(duplicates)}")
        default = data.get("default_model") or names[0]
        if default not in names:
            raise ServingError(
                f"default_model {default!r} is not one of the models: {', '.join(names)}"
            )
        tls = data.get("tls")
        if tls is not None:
            _object(tls, "tls", {"cert", "key"}, required={"cert", "key"})
            tls = TlsConfig(
                _path(tls["cert"], "tls.cert", base), _path(tls["key"], "tls.key", base)
            )
        keys = data.get("api_keys_file")
        return cls(
            models=models,
            default_model=default,
            api_keys_file=_path(keys, "api_keys_file", base) if keys else None,
            tls=tls,
            max_message_mb=_int(data.get("max_message_mb", 16), "max_message_mb", 1, 2047),
            threads=_optional_int(data.get("threads"), "threads", 1, 256),
            spinning=_bool(data.get("spinning", True), "spinning"),
            workers=_optional_int(data.get("workers"), "workers", 1, 1024),
            max_batch=_int(data.get("max_batch", 32), "max_batch", 1, 4096),
            max_pixels=_int(data.get("max_pixels", MAX_PIXELS), "max_pixels", 1, 10**10),
            runtime=_choice(data.get("runtime", "onnxruntime"), "runtime", RUNTIMES),
            device=_choice(data.get("device", "auto"), "device", DEVICES),
            batching=parse_batching(data.get("batching")),
        )


_SERVER_KEYS = (
    "models",
    "default_model",
    "api_keys_file",
    "tls",
    "max_message_mb",
    "threads",
    "spinning",
    "workers",
    "max_batch",
    "max_pixels",
    "runtime",
    "device",
    "batching",
)
_MODEL_KEYS = (
    "name",
    "version",
    "onnx",
    "precision",
    "preprocessing",
    "input_alias",
    "input_names",
    "outputs",
    "labels",
    "bf16",
)
_OUTPUT_KEYS = ("alias", "onnx_output", "names", "postprocess")


def _object(value: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(value, dict):
        raise ServingError(f"{where} must be a JSON object; got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ServingError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are "
            f"{', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(value))
    if missing:
        raise ServingError(f"{where}: missing key(s) {', '.join(missing)}")


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ServingError(f"{where} must be an integer from {low} to {high}; got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ServingError(f"{where} must be true or false; got {value!r}")
    return value


def _optional_int(value: Any, where: str, low: int, high: int) -> int | None:
    return None if value is None else _int(value, where, low, high)


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ServingError(f"{where} must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_batching(value: Any) -> BatchingConfig | None:
    """``null`` (off) or an object with ``max_batch_size`` and ``max_queue_delay_us``."""
    if value is None:
        return None
    _object(value, "batching", {"max_batch_size", "max_queue_delay_us"})
    return BatchingConfig(
        max_batch_size=_int(value.get("max_batch_size", 8), "batching.max_batch_size", 1, 4096),
        max_queue_delay_us=_int(
            value.get("max_queue_delay_us", 2000), "batching.max_queue_delay_us", 0, 10_000_000
        ),
    )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ServingError(f"{where} must be a non-empty string; got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ServingError(f"{where} must be a list of strings; got {value!r}")
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _path(value: Any, where: str, base: Path) -> Path:
    path = Path(_string(value, where)).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _model(data: Any, where: str, base: Path) -> ModelConfig:
    _object(data, where, set(_MODEL_KEYS), required={"name", "onnx"})
    name = _string(data["name"], f"{where}.name")
    if not NAME_PATTERN.match(name):
        raise ServingError(
            f"{where}.name {name!r} must start with a letter or digit and use only letters, "
            "digits, '.', '_' and '-' (it appears in REST paths)"
        )
    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ServingError(
            f"{where}.precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
        )
    try:
        preprocessing = Preprocessing.from_dict(data.get("preprocessing"))
    except (ValueError, TypeError) as exc:
        raise ServingError(f"{where}.preprocessing: {exc}") from None
    outputs_data = data.get("outputs") or []
    if not isinstance(outputs_data, list):
        raise ServingError(f"{where}.outputs must be a list of output objects")
    outputs = tuple(_output(o, f"{where}.outputs[{i}]") for i, o in enumerate(outputs_data))
    labels = data.get("labels")
    return ModelConfig(
        name=name,
        onnx=_path(data["onnx"], f"{where}.onnx", base),
        version=_int(data.get("version", 1), f"{where}.version", 1, 2**62),
        precision=precision,
        preprocessing=preprocessing,
        input_alias=_string(data.get("input_alias", DEFAULT_INPUT_ALIAS), f"{where}.input_alias"),
        input_names=_strings(data.get("input_names"), f"{where}.input_names"),
        outputs=outputs,
        labels=_path(labels, f"{where}.labels", base) if labels else None,
        bf16=_bool(data.get("bf16", False), f"{where}.bf16"),
    )


def _output(data: Any, where: str) -> OutputConfig:
    _object(data, where, set(_OUTPUT_KEYS), required={"alias", "onnx_output"})
    postprocess = data.get("postprocess") or "none"
    if postprocess not in POSTPROCESS:
        raise ServingError(
            f"{where}.postprocess must be one of {', '.join(POSTPROCESS)}; got {postprocess!r}"
        )
    return OutputConfig(
        alias=_string(data["alias"], f"{where}.alias"),
        onnx_output=_string(data["onnx_output"], f"{where}.onnx_output"),
        names=_strings(data.get("names"), f"{where}.names"),
        postprocess=postprocess,
    )
