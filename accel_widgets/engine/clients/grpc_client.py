"""Score images against a deployed service: one client, one channel, one error type.

Plain Python (no TensorFlow): the messages come from :mod:`accel_widgets.serving.protocol`.
It speaks TF Serving's PredictionService, so it also talks to TF Serving itself and to
anything else that implements that protocol.

What it fixes in the retired Azure client:

* **The key is sent.** The old client built call credentials from the access token and
  then opened the channel without them, so the token never left the machine. Here
  ``authorization: Bearer <token>`` and ``x-ms-aml-grpc-service-route:
  /api/v1/service/<name>`` are attached to *every* call as plain metadata, which works on
  TLS and plaintext channels alike.
* **Retries are declared, not hand-rolled.** The old client retried every ``RpcError``
  five times with sleeps, including INVALID_ARGUMENT, which can never succeed. Here a gRPC
  service config retries UNAVAILABLE only (and a CANCELLED sent by a server that is shutting
  down, see :data:`SERVICE_CONFIG`): up to 5 attempts, exponential backoff from
  0.2 s to 3 s. DEADLINE_EXCEEDED is deliberately *not* retried: the deadline covers all
  attempts together, so once it has passed there is no time left for another one, and
  re-sending a request that was slow because the server is overloaded adds load exactly
  when it hurts. A slow model needs a longer ``timeout``, which the error message says.
* **No stale channel.** Keepalive pings every 30 s find a dead connection, and reconnect
  backoff is capped at 2 s, so a restarted service is reached within seconds.
* **One error type.** Every gRPC failure becomes :class:`~accel_widgets.errors.ScoringError`
  with the status name as ``code`` and advice on what to do next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from accel_widgets.engine.clients.detection import Detection, detections_from_outputs
from accel_widgets.engine.clients.images import ImageLike, encode_image, score_files
from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS
from accel_widgets.errors import ScoringError
from accel_widgets.serving import protocol
from accel_widgets.serving.tensors import dtype_name, make_tensor_proto, tensor_to_numpy

#: Retry policy, declared as gRPC service config (see the module docstring for why only
#: UNAVAILABLE). Health checks are not retried: ``is_ready()`` must answer at once.
#: CANCELLED too, when the *server* sends it: gRPC's server cancels the calls that reach it
#: while it shuts down instead of refusing them (grpc/grpc#41785, #24237), so a client that
#: sends a call as a service's old version stops (a version swap, engine/targets/local.py)
#: got CANCELLED in 2 of 4 container swaps; the retry goes to the new version. A cancel by
#: this client is never retried (gRPC retries only statuses a server sent).
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": protocol.PREDICTION_SERVICE}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.2s",
                "maxBackoff": "3s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }
    ]
}

DEFAULT_MAX_MESSAGE_MB = 64

_ADVICE = {
    "UNAVAILABLE": (
        "the service at {target} did not answer: is it running? `accel-widgets services` "
        "shows its state and address"
    ),
    "UNAUTHENTICATED": (
        "pass the service's key: PredictionClient(..., access_token=KEY); "
        "`accel-widgets services` shows it"
    ),
    "DEADLINE_EXCEEDED": (
        "no answer within {timeout:g} s; the service may be overloaded or still warming up, "
        "or the model needs longer: pass a larger timeout="
    ),
    "RESOURCE_EXHAUSTED": "the request is too large for the service; send a smaller image",
    "UNIMPLEMENTED": (
        "the server at {target} does not implement TF Serving's PredictionService; "
        "check the address and port"
    ),
}


class PredictionStub:
    """The RPC callables, one attribute each, so a test can replace any of them."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Predict = channel.unary_unary(
            protocol.PREDICT_METHOD,
            request_serializer=protocol.PredictRequest.SerializeToString,
            response_deserializer=protocol.PredictResponse.FromString,
        )
        self.GetModelMetadata = channel.unary_unary(
            protocol.GET_MODEL_METADATA_METHOD,
            request_serializer=protocol.GetModelMetadataRequest.SerializeToString,
            response_deserializer=protocol.GetModelMetadataResponse.FromString,
        )
        self.Check = channel.unary_unary(
            protocol.HEALTH_CHECK_METHOD,
            request_serializer=protocol.HealthCheckRequest.SerializeToString,
            response_deserializer=protocol.HealthCheckResponse.FromString,
        )


def _split(address: str, port: int | None) -> tuple[str, int]:
    if port is None:
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"no port in address {address!r}; use 'host:port' or port=")
        return host.strip("[]"), int(port_text)
    return address, int(port)


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class PredictionClient:
    """A scoring client for one service; reuse it (it owns one gRPC channel).

    Parameters
    ----------
    address
        Host name or IP, or ``host:port`` when ``port`` is None.
    port
        gRPC port.
    use_ssl
        TLS channel (``root_certificates`` for a private CA or a self-signed certificate).
    access_token
        The service key, sent as ``authorization: Bearer <key>`` on every call.
    service_name
        Sent as ``x-ms-aml-grpc-service-route: /api/v1/service/<name>`` on every call, for
        gateways that route on it (Azure's did).
    timeout
        Default seconds per call, all retries included.
    root_certificates
        PEM bytes, or a path to a PEM file.
    replicas
        More ``host:port`` addresses of the same service (replicas behind no load balancer,
        or several containers of one image): calls are spread over all of them, round-robin,
        on one channel. ``round_robin=True`` does the same over every address a DNS name
        resolves to (a Kubernetes headless Service): a ClusterIP Service balances gRPC per
        connection, so one channel would otherwise stick to one pod.
    """

    def __init__(
        self,
        address: str,
        port: int | None = None,
        use_ssl: bool = False,
        access_token: str | None = None,
        service_name: str | None = None,
        *,
        timeout: float = 10.0,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
        replicas: Sequence[str] = (),
        round_robin: bool = False,
    ) -> None:
        if not address:
            raise ValueError("address is empty; give the service's host name or IP")
        address, port = _split(address, port)
        self.address = address
        self.port = int(port)
        self.target = _join(address, port)
        self.replicas = tuple(_join(*_split(r, None)) for r in replicas)
        config = dict(SERVICE_CONFIG)
        if self.replicas or round_robin:
            config["loadBalancingConfig"] = [{"round_robin": {}}]
        if self.replicas:
            # gRPC's static resolver: one channel, every address a subchannel.
            every = [self.target, *self.replicas]
            if any(a.startswith("[") for a in every):
                raise ValueError("replicas: use IPv4 addresses or one DNS name with round_robin")
            self.target = "ipv4:" + ",".join(every)
        elif round_robin:
            self.target = f"dns:///{self.target}"
        self.timeout = timeout
        self.access_token = access_token
        self.service_name = service_name
        self.use_ssl = use_ssl
        limit = max_message_mb * 1024 * 1024
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(config)),
            # gRPC only retries requests it still holds; the default 256 KiB buffer would
            # make every photo-sized request unretryable.
            ("grpc.per_rpc_retry_buffer_size", limit),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        if use_ssl:
            if isinstance(root_certificates, (str, os.PathLike)):
                root_certificates = Path(root_certificates).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(self.target, options=options)
        self.stub = PredictionStub(self.channel)

    # -- life cycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = "with key" if self.access_token else "no key"
        return f"PredictionClient({self.target}, {'tls' if self.use_ssl else 'plaintext'}, {auth})"

    # -- calls -----------------------------------------------------------------------------

    def metadata_headers(self) -> tuple[tuple[str, str], ...]:
        """The metadata attached to every call (auth and route headers)."""
        headers = []
        if self.access_token:
            headers.append(("authorization", f"Bearer {self.access_token}"))
        if self.service_name:
            headers.append(("x-ms-aml-grpc-service-route", f"/api/v1/service/{self.service_name}"))
        return tuple(headers)

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        try:
            return method(request, timeout=timeout, metadata=self.metadata_headers())
        except grpc.RpcError as exc:
            raise self._error(exc, timeout) from None

    def _error(self, exc: grpc.RpcError, timeout: float) -> ScoringError:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        advice = _ADVICE.get(name, "").format(target=self.target, timeout=timeout)
        message = f"{details} -- {advice}" if advice else details
        return ScoringError(message, name)

    def predict(self, request: Any, timeout: float | None = None) -> Any:
        """Send a ready ``PredictRequest``; the raw ``PredictResponse``."""
        return self._call(self.stub.Predict, request, timeout)

    def is_ready(self, model_name: str = "", timeout: float = 2.0) -> bool:
        """True when the service says SERVING (gRPC health), False for anything else.

        A server without the health service (TF Serving itself) is asked for the model's
        metadata instead.
        """
        service = protocol.PREDICTION_SERVICE
        try:
            response = self.stub.Check(
                protocol.HealthCheckRequest(service=service),
                timeout=timeout,
                metadata=self.metadata_headers(),
            )
            return response.status == protocol.SERVING_STATUS["SERVING"]
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                return False
        try:
            self.metadata(model_name, timeout=timeout)
            return True
        except ScoringError:
            return False

    def metadata(self, model_name: str = "", timeout: float | None = None) -> dict[str, Any]:
        """The model's default signature (name, version, inputs/outputs with dtype and shape).

        ``signatures`` holds every signature, e.g. ``predict_pixels`` for a preprocessed tensor.
        """
        request = protocol.GetModelMetadataRequest()
        if model_name:  # none: the server's default model (an empty name is refused)
            request.model_spec.name = model_name
        request.metadata_field.append(protocol.SIGNATURE_DEF_FIELD)
        response = self._call(self.stub.GetModelMetadata, request, timeout)
        signatures = protocol.SignatureDefMap()
        response.metadata[protocol.SIGNATURE_DEF_FIELD].Unpack(signatures)

        def describe(infos: Any) -> dict[str, Any]:
            return {
                key: {
                    "name": info.name,
                    "dtype": dtype_name(info.dtype),
                    "shape": [d.size for d in info.tensor_shape.dim],
                }
                for key, info in infos.items()
            }

        described = {
            name: {"inputs": describe(d.inputs), "outputs": describe(d.outputs)}
            for name, d in signatures.signature_def.items()
        }
        default = described.get(protocol.DEFAULT_SIGNATURE, {"inputs": {}, "outputs": {}})
        return {
            "model": response.model_spec.name,
            "version": response.model_spec.version.value,
            "inputs": default["inputs"],
            "outputs": default["outputs"],
            "signatures": described,
        }

    # -- scoring ---------------------------------------------------------------------------

    def _score(
        self,
        tensor: Any,
        input_name: str,
        outputs: str | Sequence[str] | None,
        model_name: str,
        timeout: float | None,
    ) -> dict[str, np.ndarray]:
        request = protocol.PredictRequest()
        if model_name:  # none: the server's default model (an empty name is refused)
            request.model_spec.name = model_name
        request.inputs[input_name].CopyFrom(tensor)
        if isinstance(outputs, str):
            outputs = [outputs]
        request.output_filter.extend(outputs or [])
        response = self.predict(request, timeout)
        tensors = dict(response.outputs.items())
        if not outputs:
            tensors = _without_aliases(tensors)
        return {key: tensor_to_numpy(value) for key, value in tensors.items()}

    @staticmethod
    def _result(arrays: dict[str, np.ndarray], first_row: bool) -> np.ndarray | dict[str, Any]:
        if first_row:
            arrays = {k: v[0] if v.ndim and v.shape[0] == 1 else v for k, v in arrays.items()}
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        return arrays

    def score_file(
        self,
        path: str | os.PathLike[str],
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score an image file (JPEG, PNG ...) sent as it is; the server decodes it.

        Returns one image's scores (the batch axis removed): an array when the model has one
        output (or ``outputs`` names one), else a dict output name -> array.
        """
        data = Path(path).read_bytes()
        return self.score_image(data, input_name, outputs, model_name, timeout)

    def score_image(
        self,
        image: ImageLike,
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score one picture: encoded bytes, a PIL image, or an ``H x W x 3`` uint8 array.

        Pictures that are not bytes yet are encoded losslessly (PNG, fastest setting) so the
        server's preprocessing sees exactly these pixels; one too large for a PNG to fit the
        message limit is sent as a quality-95 JPEG instead.
        """
        data = encode_image(image)
        tensor = make_tensor_proto([data])
        return self._result(self._score(tensor, input_name, outputs, model_name, timeout), True)

    def detect_image(
        self,
        image: ImageLike,
        labels: Sequence[str] | None = None,
        input_name: str = "images",
        model_name: str = "",
        timeout: float | None = None,
    ) -> list[Detection]:
        """Detect objects in one picture: labelled boxes, best score first.

        Asks a detector (SSD-VGG) for its four detection outputs only, not the 12 raw maps
        (840 kB a call). ``labels`` names the class ids (VOC: ``load_labels("voc")``).
        """
        arrays = self.score_image(image, input_name, list(DETECTION_OUTPUTS), model_name, timeout)
        return detections_from_outputs(arrays, labels)

    def detect_file(
        self,
        path: str | os.PathLike[str],
        labels: Sequence[str] | None = None,
        input_name: str = "images",
        model_name: str = "",
        timeout: float | None = None,
    ) -> list[Detection]:
        """:meth:`detect_image` on an image file sent as it is."""
        data = Path(path).read_bytes()
        return self.detect_image(data, labels, input_name, model_name, timeout)

    def score_numpy_array(
        self,
        array: np.ndarray,
        input_name: str = "images",
        outputs: str | Sequence[str] | None = None,
        model_name: str = "",
        timeout: float | None = None,
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Score an already preprocessed tensor in the model's input shape (batch kept)."""
        tensor = make_tensor_proto(np.asarray(array))
        return self._result(self._score(tensor, input_name, outputs, model_name, timeout), False)

    score_batch = score_files


def _without_aliases(tensors: dict[str, Any]) -> dict[str, Any]:
    """One key per output of a filterless response: the alias, not its graph tensor names.

    A server answers a request without ``output_filter`` under each output's alias *and* the
    original graph's tensor names (``.../Softmax:0``), for clients of the original service;
    the copies are identical tensors. The key kept: ``output_alias`` (the default alias),
    else one without ``:<index>`` (graph tensor names end so, aliases do not).
    """
    kept: dict[bytes, str] = {}
    for key in sorted(tensors, key=lambda k: (k != "output_alias", ":" in k, k)):
        kept.setdefault(tensors[key].SerializeToString(), key)
    return {key: tensors[key] for key in kept.values()}


def client_from_service(service: Any, **kwargs: Any) -> Any:
    """A client for a workspace service record (``address, port, key, name, use_ssl``).

    Targets record how their service is reached in ``info``: ``replicas`` (more
    ``host:port`` addresses, spread round-robin), ``round_robin`` (a DNS name that resolves
    to every replica), or ``protocol: "rest"`` with a ``scoring_uri`` (a service that only
    speaks HTTP, such as an Azure ML online endpoint), which gets the REST client with the
    same ``score_file`` / ``score_image`` calls.
    """
    info = getattr(service, "info", None) or {}
    if info.get("protocol") == "rest":
        from accel_widgets.engine.clients.rest_client import RestPredictionClient

        return RestPredictionClient(
            info["scoring_uri"], key=getattr(service, "key", None), **kwargs
        )
    return PredictionClient(
        service.address,
        service.port,
        use_ssl=bool(getattr(service, "use_ssl", False)),
        access_token=getattr(service, "key", None),
        service_name=getattr(service, "name", None),
        replicas=tuple(info.get("replicas") or ()),
        round_robin=bool(info.get("round_robin")),
        **kwargs,
    )
