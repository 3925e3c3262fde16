"""Score images over HTTP(S): TF Serving's REST predict route, with a key, behind the same calls.

:class:`RestPredictionClient` offers what
:class:`~accel_widgets.engine.clients.grpc_client.PredictionClient` offers users
(``score_file``, ``score_image``, ``score_numpy_array``, ``score_batch``,
``is_ready``, ``close`` and the context manager) for places that speak HTTP only: an Azure ML
online endpoint's scoring URI, or our server's REST port (8501 in an image).

* **The body is TF Serving's**: ``{"instances": [{"b64": "<the encoded image>"}]}`` (or
  ``{"instances": [{"<input>": {"b64": ...}}]}`` for another input name), answered with
  ``{"predictions": [...]}``; see ``accel_widgets/serving/rest.py``.
* **The key** goes as ``Authorization: Bearer <key>`` on every request, and only over HTTPS or
  to this machine: a key is never sent in clear text across a network. Redirects are not
  followed (urllib would forward the header to wherever they point).
* **Retries** with exponential backoff (0.2 s doubling to 3 s, or the server's
  ``Retry-After``) on 429 and 503 and on a refused connection, never on 4xx answers that
  cannot change (400, 401, 404 ...). ``timeout`` bounds each call, retries included.
* **One error type**: :class:`~accel_widgets.errors.ScoringError` whose ``code`` is the gRPC
  status name the HTTP status stands for (``UNAUTHENTICATED`` for 401 ...), ``status`` the HTTP
  status, and whose message carries the server's own message and what to do next.

Only the standard library (``urllib``), so the client adds no dependency. The Azure clients
run on azure-core's pipeline; this one does not, measured: the same calls through azure-core's
PipelineClient and RetryPolicy cost 0.2-0.3 ms more each and 66 ms more to import, for nothing
scoring needs (docs/MEASUREMENTS.md, "The REST scoring client"). Its retry loop is the
engine's one hand-written retry. URL forms:

``https://NAME.REGION.inference.ml.azure.com/score``
    An Azure ML scoring URI: requests go to it as they are.
``http://127.0.0.1:8501/v1/models/resnet50:predict``
    A predict route of our server (or TF Serving).
``http://127.0.0.1:8501``
    A server's base address: the predict route is built from ``model_name``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.engine.clients.http import NoRedirect, is_loopback, retry_after
from accel_widgets.engine.clients.images import ImageLike, encode_image, score_files
from accel_widgets.errors import ScoringError

__all__ = ["RestPredictionClient"]

#: The gRPC status name each HTTP status stands for (TF Serving's own mapping, reversed).
HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    424: "UNAVAILABLE",  # Azure ML: the deployment's container did not answer
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
RETRIED = (429, 503)
_ADVICE = {
    401: (
        "pass the service's key: RestPredictionClient(url, key=KEY); `accel-widgets services` "
        "shows it (for Azure ML: `az ml online-endpoint get-credentials`)"
    ),
    403: "the key is not allowed to call this endpoint; check the key and the endpoint",
    404: "no such route or model at {url}; check the URL and the model name",
    413: "the request is too large for the service; send a smaller image",
    429: "the service is throttling requests; wait a little and try again",
    503: "the service is not ready or is overloaded; `accel-widgets services` shows its state",
}
_PREDICT = re.compile(r"^(?P<prefix>.*)/v1/models/(?P<name>[^/:]+)(?:/versions/\d+)?:predict$")
_RETRY_AFTER_MAX_S = 10.0


def _server_message(raw: bytes) -> str:
    """The server's message: our ``{"error": "..."}``, Azure's ``{"error": {"message"}}`` or
    ``{"message": ...}``, else the text itself (cut short)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        error = data.get("error", data.get("message"))
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        if error:
            return str(error)
    return text[:500]


class RestPredictionClient:
    """A scoring client for one HTTP(S) scoring address; reuse it.

    Parameters
    ----------
    url
        The scoring URI (Azure ML), a predict route, or a server's base address (see the
        module docstring).
    key
        Sent as ``Authorization: Bearer <key>`` (only over HTTPS, or plain http to loopback).
    model_name
        The model, for a base address (the predict route needs one).
    timeout
        Default seconds per call, retries included.
    retries
        How many times a 429, a 503 or a refused connection is retried.
    root_certificates
        PEM bytes or a path, for HTTPS with a private CA or a self-signed certificate.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        model_name: str | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{url!r} is not an http(s) URL; give the scoring URI, e.g. "
                "https://NAME.REGION.inference.ml.azure.com/score or http://127.0.0.1:8501"
            )
        if key and parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError(
                f"refusing to send the key in clear text to {parts.hostname}: use https:// "
                "(plain http is allowed to 127.0.0.1 and localhost only)"
            )
        self.url = url.rstrip("/") if parts.path in ("", "/") else url
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.key = key
        self.model_name = model_name
        self.timeout = timeout
        self.retries = max(0, int(retries))
        context = None
        if parts.scheme == "https":
            context = ssl.create_default_context()
            if root_certificates is not None:
                if isinstance(root_certificates, (str, os.PathLike)):
                    root_certificates = Path(root_certificates).read_bytes()
                context.load_verify_locations(cadata=root_certificates.decode())
        handlers: list[Any] = [NoRedirect()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        self.closed = False

    # -- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> RestPredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RestPredictionClient({self.url}, {'with key' if self.key else 'no key'})"

    # -- plumbing --------------------------------------------------------------------------

    def predict_url(self, model_name: str = "") -> str:
        """Where predict requests go."""
        path = urllib.parse.urlsplit(self.url).path
        if path in ("", "/"):
            name = model_name or self.model_name
            if not name:
                raise ValueError(
                    f"{self.url} is a base address: give model_name= (the predict route is "
                    "/v1/models/<model_name>:predict), or the full scoring URI"
                )
            return f"{self.url}/v1/models/{urllib.parse.quote(name, safe='')}:predict"
        return self.url

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "accel-widgets-rest-client"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def _request(
        self, method: str, url: str, payload: Any, timeout: float | None
    ) -> tuple[int, bytes]:
        """One call with retries: (status, body) of a 2xx answer, else a ScoringError."""
        if self.closed:
            raise ScoringError("this client was closed; make a new RestPredictionClient")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        data = None if payload is None else json.dumps(payload).encode()
        backoff = 0.2
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScoringError(
                    f"no answer from {url} within {timeout:g} s (retries included); the service "
                    "may be overloaded or still warming up: pass a larger timeout=",
                    "DEADLINE_EXCEEDED",
                )
            request = urllib.request.Request(
                url, data=data, headers=self._headers(data is not None), method=method
            )
            wait = None
            try:
                with self._opener.open(request, timeout=left) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                try:
                    raw = exc.read()
                except OSError:
                    raw = b""
                if exc.code not in RETRIED or attempt > self.retries:
                    raise self._error(exc.code, raw, url, attempt) from None
                given = retry_after(exc.headers)
                if given is not None:
                    wait = min(given, _RETRY_AFTER_MAX_S)
            except (TimeoutError, ssl.SSLError) as exc:
                raise self._unreachable(url, exc, timeout) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError) or attempt > self.retries:
                    raise self._unreachable(url, reason, timeout) from None
                if not isinstance(reason, ConnectionError):
                    raise self._unreachable(url, reason, timeout) from None
            wait = backoff if wait is None else wait
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            backoff = min(backoff * 2, 3.0)

    def _error(self, status: int, raw: bytes, url: str, attempts: int) -> ScoringError:
        code = HTTP_CODES.get(status, f"HTTP_{status}")
        message = _server_message(raw) or http.client.responses.get(status, "error")
        advice = _ADVICE.get(status, "").format(url=url)
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        text = f"HTTP {status} from {url}{tried}: {message}"
        error = ScoringError(f"{text} -- {advice}" if advice else text, code)
        error.status = status  # type: ignore[attr-defined]
        return error

    @staticmethod
    def _unreachable(url: str, reason: Any, timeout: float) -> ScoringError:
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            error = ScoringError(
                f"no answer from {url} within {timeout:g} s; the service may be overloaded or "
                "still warming up, or the model needs longer: pass a larger timeout=",
                "DEADLINE_EXCEEDED",
            )
        else:
            error = ScoringError(
                f"could not reach {url} ({reason}): is the service running? "
                "`accel-widgets services` shows its state and address",
                "UNAVAILABLE",
            )
        error.status = None  # type: ignore[attr-defined]
        return error

    # -- health ----------------------------------------------------------------------------

    def health(self, timeout: float = 2.0) -> str:
        """``serving``, ``not_serving`` (it answered, but not ready) or ``unreachable``.

        Our server's ``GET /healthz`` where the URL is our server's; for an opaque scoring URI
        (Azure ML's ``/score``) a GET on it, which the gateway passes to the model server's
        predict route: the server's "predict takes POST" (405/501) means it serves, the
        gateway's 424/502/503 that it does not.
        """
        path = urllib.parse.urlsplit(self.url).path
        ours = path in ("", "/") or _PREDICT.match(path) is not None
        if ours:
            prefix = "" if path in ("", "/") else _PREDICT.match(path)["prefix"]  # type: ignore[index]
            url, ok = f"{self.origin}{prefix}/healthz", (200,)
        else:
            url, ok = self.url, (200, 405, 501)
        request = urllib.request.Request(url, headers=self._headers(False), method="GET")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
            return "unreachable"
        return "serving" if status in ok else "not_serving"

    def is_ready(self, model_name: str = "", timeout: float = 2.0) -> bool:
        """True when the service answers that it serves (see :meth:`health`)."""
        return self.health(timeout) == "serving"

    # -- scoring ---------------------------------------------------------------------------

    def _predict(
        self,
        instances: list[Any],
        input_name: str,
        outputs: str | Sequence[str] | None,
        model_name: str,
        timeout: float | None,
    ) -> list[Any]:
        if input_name and input_name != "images":
            instances = [{input_name: i} for i in instances]
        body: dict[str, Any] = {"instances": instances}
        if isinstance(outputs, str):
            outputs = [outputs]
        if outputs:
            body["output_filter"] = list(outputs)
        url = self.predict_url(model_name)
        _, raw = self._request("POST", url, body, timeout)
        try:
            answer = json.loads(raw)
            predictions = answer["predictions"]
        except (ValueError, KeyError, TypeError):
            raise ScoringError(
                f"{url} answered without a 'predictions' list: {raw[:200]!r}; is this a TF "
                "Serving REST predict route?",
                "INTERNAL",
            ) from None
        return predictions

    @staticmethod
    def _row(row: Any) -> np.ndarray | dict[str, np.ndarray]:
        if isinstance(row, dict):
            return {k: np.asarray(v) for k, v in row.items()}
        return np.asarray(row)

    def score_image(
        self,
        image: ImageLike,
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score one picture (bytes, a PIL image or an ``H x W x 3`` uint8 array).

        One image's scores (the batch axis removed): an array, or a dict output -> array.
        """
        data = base64.b64encode(encode_image(image)).decode("ascii")
        predictions = self._predict([{"b64": data}], input_name, outputs, model_name, timeout)
        if not predictions:
            raise ScoringError("the service answered with no predictions", "INTERNAL")
        return self._row(predictions[0])

    def score_file(
        self,
        path: str | os.PathLike[str],
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score an image file (JPEG, PNG ...) sent as it is; the server decodes it."""
        return self.score_image(Path(path).read_bytes(), input_name, outputs, model_name, timeout)

    def score_numpy_array(
        self,
        array: np.ndarray,
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score a preprocessed tensor in the model's input shape (batch kept)."""
        rows = np.asarray(array).tolist()
        predictions = self._predict(rows, input_name, outputs, model_name, timeout)
        if predictions and isinstance(predictions[0], dict):
            return {k: np.asarray([p[k] for p in predictions]) for k in predictions[0]}
        return np.asarray(predictions)

    #: Files one request each with progress: the gRPC client's loop, over this client's
    #: ``score_file``.
    score_batch = score_files
