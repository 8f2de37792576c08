"""`python -m konan.serving --spec PATH …`: run one model-server replica."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from konan.serving.server import Options, serve


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m konan.serving",
        description="Serve one deployment replica: the models, traffic policy and key source "
        "named by a serving spec. Settings (artifact store, log stream) come from KONAN_* "
        "environment variables; the key endpoint's token from KONAN_SERVING_TOKEN.",
    )
    parser.add_argument("--spec", type=Path, required=True, help="the serving spec (JSON) file")
    parser.add_argument("--host", default="127.0.0.1", help="public address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="public port (0: any free port)")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind the public port with SO_REUSEPORT so several replicas can share it",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="private port of this replica alone (health checks, /stats, /metrics)",
    )
    parser.add_argument("--admin-host", default=None, help="admin address (default: --host)")
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="seconds between SIGTERM (readiness off) and closing the listeners (default 0)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=20.0,
        help="seconds in-flight requests get to finish after SIGTERM (default 20)",
    )
    parser.add_argument(
        "--accept-grace",
        type=float,
        default=1.0,
        help="after SIGTERM closed the listeners, seconds a connection already accepted may "
        "take to send its request before it is closed (default 1)",
    )
    parser.add_argument(
        "--shadow-queue", type=int, default=64, help="shadow jobs that may wait (default 64)"
    )
    parser.add_argument(
        "--log-queue",
        type=int,
        default=None,
        help="prediction records that may wait in memory for the log writer (default 10000)",
    )
    parser.add_argument(
        "--model-threads",
        type=int,
        default=4,
        help="threads for slow models (> 2 ms per call); fast ones run inline (default 4)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
    )
    args = parser.parse_args(argv)
    for name in ("shadow_queue", "model_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.log_queue is not None and args.log_queue < 1:
        parser.error("--log-queue must be at least 1")
    for name in ("drain_delay", "graceful_timeout", "accept_grace"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    return Options(
        spec=args.spec,
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        drain_delay=args.drain_delay,
        graceful_timeout=args.graceful_timeout,
        accept_grace=args.accept_grace,
        shadow_queue=args.shadow_queue,
        log_queue=args.log_queue,
        model_threads=args.model_threads,
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
