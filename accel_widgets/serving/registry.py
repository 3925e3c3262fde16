"""The models a server holds, and the one predict path both front ends call.

Every protocol (TF Serving and Open Inference Protocol, gRPC and REST) differs only in how a
request is spelled; model lookup, the loading state and version checks live here once (auth,
status codes and metrics: ``pipeline.py``), so all answer the same question the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from accel_widgets.serving.config import ServerConfig
from accel_widgets.serving.metrics import Metrics
from accel_widgets.serving.model import LoadedModel
from accel_widgets.serving.protocol import DEFAULT_SIGNATURE
from accel_widgets.serving.status import RequestError, echo

#: The signatures every model has (see ``LoadedModel.signatures``).
SIGNATURES = (DEFAULT_SIGNATURE, "predict_pixels")

log = logging.getLogger("accel_widgets.serving")


class ModelRegistry:
    """Holds the loaded models; answers UNAVAILABLE with a reason while they load.

    The gRPC port opens before the models load, so a client that connects early hears
    "model 'x' is loading" (and its UNAVAILABLE retry policy waits) instead of a bare
    connection refusal: the retired service's "UNAVAILABLE for minutes, no explanation".
    """

    def __init__(self, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return len(self.models) == len(self.config.models)

    def load_all(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Load every configured model in turn (raises ServingError on the first failure)."""
        for model_config in self.config.models:
            if should_stop():
                return
            model = LoadedModel.load(
                model_config,
                threads=self.config.threads,
                spinning=self.config.spinning,
                max_pixels=self.config.max_pixels,
                max_batch=self.config.max_batch,
                runtime_name=self.config.runtime,
                device=self.config.device,
                batching=self.config.batching,
            )
            with self._lock:
                self.models[model.name] = model

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The model for a request's ``model_spec``; empty name means the default model."""
        name = name or self.config.default_model
        model = self.models.get(name)
        if model is None:
            configured = [m.name for m in self.config.models]
            if name in configured:
                raise RequestError(
                    "UNAVAILABLE",
                    f"model '{name}' is still loading (warming up); retry in a few seconds",
                )
            raise RequestError(
                "NOT_FOUND",
                f"no model '{echo(name)}' on this server; models are "
                + ", ".join(f"'{n}'" for n in configured),
            )
        if version is not None and version != model.version:
            raise RequestError(
                "NOT_FOUND",
                f"model '{name}' has version {model.version} here, not {version}; "
                "leave the version out to use the one served",
            )
        return model

    @staticmethod
    def check_signature(signature_name: str) -> None:
        """Both signatures take either input (images or pixels): the name only has to exist."""
        if signature_name not in ("", *SIGNATURES):
            raise RequestError(
                "INVALID_ARGUMENT",
                f"no signature '{echo(signature_name)}'; this server has "
                f"{', '.join(repr(s) for s in SIGNATURES)} (or leave signature_name empty)",
            )

    def predict(
        self,
        model: LoadedModel,
        inputs: dict[str, Sequence[bytes] | np.ndarray],
        output_filter: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Score one request's inputs (exactly one entry) with ``model``."""
        if len(inputs) != 1:
            got = ", ".join(f"'{k}'" for k in inputs) or "none"
            raise RequestError(
                "INVALID_ARGUMENT",
                f"send exactly one input (got {got}); model '{model.name}' accepts "
                + ", ".join(f"'{n}'" for n in model.input_names),
            )
        ((input_name, value),) = inputs.items()
        return model.predict(input_name, value, output_filter)
