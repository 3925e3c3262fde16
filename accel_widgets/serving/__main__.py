"""``python -m accel_widgets.serving``: serve the models a config file names.

    python -m accel_widgets.serving --config CONFIG.json [--host 127.0.0.1] [--port 0]
        [--rest-port 0 | --no-rest] [--ready-file PATH] [--log-level info]
        [--grace-seconds 10] [--insecure-no-auth]

Port 0 picks a free port; the ports bound are logged and written to the ready file. In a
container, ``ACCEL_WIDGETS_HOST``, ``ACCEL_WIDGETS_PORT`` and ``ACCEL_WIDGETS_REST_PORT`` set
the defaults, and ``ACCEL_WIDGETS_API_KEYS_FILE`` names a keys file mounted into the
container (a Docker bind mount, a Kubernetes Secret volume) that turns authentication on
without a key in the image or in the container's environment, where ``docker inspect``,
``kubectl describe`` and ``/proc/PID/environ`` would show it. ``ACCEL_WIDGETS_API_KEYS``
(keys separated by commas or newlines) still works for a quick ``docker run --env``; it is
removed from the environment once read.

``--reuse-port`` lets a second server bind a gRPC port this one serves (SO_REUSEPORT): the
engine starts a service's new version on the same port, switches, then stops the old one,
so no client is refused meanwhile. Off by default, so a port in use is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from accel_widgets.errors import ServingError


def _env_port(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m accel_widgets.serving",
        description="Serve ONNX image models over TF Serving's gRPC and REST APIs.",
    )
    parser.add_argument("--config", required=True, type=Path, help="server config JSON file")
    parser.add_argument(
        "--host",
        default=os.environ.get("ACCEL_WIDGETS_HOST") or "127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else needs api_keys_file "
        "in the config or --insecure-no-auth)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_port("ACCEL_WIDGETS_PORT", 0),
        help="gRPC port; 0 picks a free one",
    )
    parser.add_argument(
        "--rest-port",
        type=int,
        default=_env_port("ACCEL_WIDGETS_REST_PORT", 0),
        help="REST port; 0 picks a free one",
    )
    parser.add_argument("--no-rest", action="store_true", help="do not open the REST port")
    parser.add_argument(
        "--ready-file", type=Path, help="write {port, rest_port, pid} here once serving"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, how long requests in flight may take to finish",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=os.environ.get("ACCEL_WIDGETS_REUSE_PORT", "") == "1",
        help="share the gRPC port with another server of this user (a version swap); "
        "ACCEL_WIDGETS_REUSE_PORT=1 in a container",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=os.environ.get("ACCEL_WIDGETS_IDLE_TIMEOUT") or "0",
        help="stop after this many seconds without a scoring request (0: never); "
        "ACCEL_WIDGETS_IDLE_TIMEOUT in a container",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow serving beyond loopback without API keys",
    )
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    """A duration flag: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (never) or more seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    log = logging.getLogger("accel_widgets.serving")
    # Imported after logging is set up, so import-time problems are logged the same way.
    from accel_widgets.serving.config import RUNTIMES, ServerConfig
    from accel_widgets.serving.server import ServeOptions, serve

    try:
        config = ServerConfig.load(args.config)
        # A container's target passes the deploy's runtime here: the config baked into the
        # image says "auto", and a user may pin one runtime without rebuilding the image.
        if runtime := os.environ.get("ACCEL_WIDGETS_RUNTIME", "").strip():
            if runtime not in RUNTIMES:
                raise ServingError(
                    f"ACCEL_WIDGETS_RUNTIME must be one of {', '.join(RUNTIMES)}; got {runtime!r}"
                )
            config = dataclasses.replace(config, runtime=runtime)
    except ServingError as exc:
        log.error("%s", exc)
        return 1
    env_keys = os.environ.pop("ACCEL_WIDGETS_API_KEYS", "")
    api_keys = tuple(k.strip().encode() for k in env_keys.replace(",", "\n").split() if k)
    if keys_file := os.environ.get("ACCEL_WIDGETS_API_KEYS_FILE", "").strip():
        from accel_widgets.serving.auth import load_keys

        try:
            api_keys += load_keys(Path(keys_file))
        except ServingError as exc:
            log.error("%s (ACCEL_WIDGETS_API_KEYS_FILE)", exc)
            return 1
    options = ServeOptions(
        api_keys=api_keys,
        host=args.host,
        port=args.port,
        rest_port=None if args.no_rest else args.rest_port,
        ready_file=args.ready_file,
        insecure_no_auth=args.insecure_no_auth,
        grace_seconds=args.grace_seconds,
        reuse_port=args.reuse_port,
        idle_timeout=args.idle_timeout,
    )
    return serve(config, options)


if __name__ == "__main__":
    sys.exit(main())
