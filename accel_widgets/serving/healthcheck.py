"""``python -m accel_widgets.serving.healthcheck``: exit 0 when the local server says SERVING.

The container image's ``HEALTHCHECK`` runs this, so ``docker ps`` shows ``healthy`` only
once the model has loaded and warmed up. It asks the standard ``grpc.health.v1`` service
(no API key needed, as for Kubernetes' gRPC probes) on ``ACCEL_WIDGETS_PORT``, through
loopback when the server listens on every address.
"""

from __future__ import annotations

import os
import sys

import grpc

from accel_widgets.serving import protocol


def check(host: str, port: int, timeout: float = 2.0) -> bool:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            protocol.HEALTH_CHECK_METHOD,
            request_serializer=protocol.HealthCheckRequest.SerializeToString,
            response_deserializer=protocol.HealthCheckResponse.FromString,
        )
        try:
            response = call(protocol.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            print(f"not healthy: {exc.code().name} from {target}", file=sys.stderr)
            return False
    serving = response.status == protocol.SERVING_STATUS["SERVING"]
    if not serving:
        print(f"not healthy: {target} is not serving yet", file=sys.stderr)
    return serving


def main() -> int:
    host = os.environ.get("ACCEL_WIDGETS_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = int(os.environ.get("ACCEL_WIDGETS_PORT") or 8500)
    return 0 if check(host, port) else 1


if __name__ == "__main__":
    sys.exit(main())
