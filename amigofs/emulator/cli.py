"""The ``amigofs emulator`` subcommand: serve the API emulator on a port."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from amigofs.emulator.config import FAULT_KINDS, EmulatorConfig
from amigofs.emulator.server import serve

log = logging.getLogger(__name__)

API_KEY_ENV = "AMIGO_API_KEY"

# (flag, EmulatorConfig field, type, help)
_KNOB_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--seed", "seed", int, "seed of the synthetic dataset; same seed, same bytes (default 1)"),
    ("--workspaces", "workspaces", int, "workspaces the key owns (default 2)"),
    ("--calls", "calls_per_workspace", int, "recorded calls per workspace (default 25)"),
    ("--long-calls", "long_calls", int, "of those, calls lasting --long-duration (default 0)"),
    ("--long-duration", "long_duration", float, "seconds of a long call (default 3600)"),
    ("--min-duration", "min_duration", float, "shortest ordinary call in seconds (default 5)"),
    ("--max-duration", "max_duration", float, "longest ordinary call in seconds (default 120)"),
    (
        "--null-sid-calls",
        "null_sid_calls",
        int,
        "extra calls per workspace listed with call_sid null (default 2)",
    ),
    (
        "--no-recording-calls",
        "no_recording_calls",
        int,
        "extra calls per workspace listed with has_recording false (default 2)",
    ),
    (
        "--archived",
        "archived_calls",
        int,
        "recorded calls per workspace (the oldest) answering 202 archived (default 0)",
    ),
    (
        "--not-configured",
        "not_configured_workspaces",
        int,
        "workspaces whose recording endpoints answer 503 not configured (default 0)",
    ),
    ("--fault-rate", "fault_rate", float, "probability of a fault per /v1 request (default 0)"),
    (
        "--fault-kinds",
        "fault_kinds",
        str,
        f"comma-separated faults to draw from (default all: {','.join(FAULT_KINDS)})",
    ),
    ("--retry-after", "retry_after", int, "Retry-After seconds of a 429 fault (default 1)"),
    ("--stall-seconds", "stall_seconds", float, "how long a stall fault pauses (default 120)"),
    ("--latency", "latency", float, "seconds added before answering each /v1 request"),
    ("--bandwidth", "bandwidth", int, "bytes per second per response body (default unlimited)"),
    (
        "--url-ttl",
        "url_ttl",
        float,
        "seconds download links stay valid (default: they never expire)",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to a (sub)parser."""
    parser.description = (
        "Serve an emulator of the Amigo Platform API (the endpoints amigofs uses) with a "
        "deterministic synthetic dataset of call recordings. Prints one line, "
        "'amigofs emulator listening on http://HOST:PORT', once it accepts connections. "
        "Harness endpoints without auth: GET /__stats, POST /__stats/reset, POST /__control."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the bearer key clients must send (default: ${API_KEY_ENV})",
    )
    for flag, name, kind, text in _KNOB_FLAGS:
        parser.add_argument(flag, dest=f"emulator_{name}", type=kind, default=None, help=text)
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level, e.g. DEBUG for one line a request"
    )


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The EmulatorConfig the options describe; ValueError for a bad combination."""
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ValueError(f"an API key is required: --api-key or ${API_KEY_ENV}")
    knobs: dict[str, object] = {}
    for _, name, _, _ in _KNOB_FLAGS:
        value = getattr(args, f"emulator_{name}")
        if value is None:
            continue
        if name == "fault_kinds":
            value = tuple(kind.strip() for kind in str(value).split(",") if kind.strip())
        knobs[name] = value
    return EmulatorConfig(api_key=api_key, **knobs)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 for bad options."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"amigofs emulator: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_main, config, args.host, args.port)
    except OSError as error:
        print(
            f"amigofs emulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr
        )
        return 1
    return 0


async def _main(config: EmulatorConfig, host: str, port: int) -> None:
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve(
                    config,
                    host=host,
                    port=port,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
            )
            print(f"amigofs emulator listening on {url}", flush=True)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                stop.set()
                break
