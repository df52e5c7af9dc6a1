"""The ``amigofs emulator`` subcommand: serve the API emulator on a port."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping

import trio

from amigofs.emulator.config import FAULT_KINDS, EmulatorConfig
from amigofs.emulator.process import listening_line
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
    (
        "--hostile-listing",
        "hostile_listing",
        bool,
        "add invalid entries (bad ids, path tricks, control characters, duplicates) to every "
        "listing page",
    ),
    (
        "--bad-metadata",
        "bad_metadata",
        int,
        "recorded calls per workspace (the newest) whose metadata is truncated, not JSON, or "
        "has a negative or absurd size (default 0)",
    ),
    (
        "--size-mismatch",
        "size_mismatch",
        int,
        "next recorded calls per workspace whose stored audio is shorter or longer than the "
        "metadata says, or whose bodies end early (default 0)",
    ),
    (
        "--evil-urls",
        "evil_urls",
        int,
        "next recorded calls per workspace whose download links point at another host or "
        "outside the call's download path (default 0)",
    ),
    (
        "--evil-host",
        "evil_host",
        str,
        "the foreign server those links point at (default http://127.0.0.2:9)",
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


_METAVARS = {
    "fault_rate": "P",
    "fault_kinds": "KINDS",
    "bandwidth": "BYTES",
    "seed": "N",
    "retry_after": "S",
    "evil_host": "URL",
}


def _metavar(name: str, kind: type) -> str:
    return _METAVARS.get(name, "S" if kind is float else "N")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to a (sub)parser."""
    if parser.description is None:
        parser.description = (
            "Serve an emulator of the Amigo Platform API (the endpoints amigofs uses) with a "
            "deterministic synthetic dataset of call recordings."
        )
    parser.epilog = (
        "Once it accepts connections it prints one line, "
        "'amigofs emulator listening on http://HOST:PORT'. SIGINT or SIGTERM stop it. "
        "Harness endpoints (no auth): GET /__stats, POST /__stats/reset, "
        "GET|POST /__control (JSON: fault_rate, fault_kinds, latency, bandwidth, url_ttl, "
        "retry_after, stall_seconds, restore: [sid], archive: [sid])."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"the bearer key clients must send (default: ${API_KEY_ENV})",
    )
    for flag, name, kind, text in _KNOB_FLAGS:
        if kind is bool:
            parser.add_argument(
                flag, dest=f"emulator_{name}", action="store_const", const=True, help=text
            )
            continue
        parser.add_argument(
            flag,
            dest=f"emulator_{name}",
            type=kind,
            default=None,
            metavar=_metavar(name, kind),
            help=text,
        )
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level, e.g. DEBUG for one line a request"
    )


def knob_arguments(knobs: Mapping[str, object]) -> list[str]:
    """The command-line options that set these EmulatorConfig fields: the inverse of
    config_from_args, for whoever starts the emulator as a child process."""
    flags = {name: (flag, kind) for flag, name, kind, _ in _KNOB_FLAGS}
    argv: list[str] = []
    for name, value in knobs.items():
        if name not in flags:
            raise ValueError(f"the emulator has no option for {name!r}")
        flag, kind = flags[name]
        if value is None or (kind is bool and not value):
            continue
        if kind is bool:
            argv.append(flag)
        elif isinstance(value, tuple | list):  # fault_kinds
            argv += [flag, ",".join(str(item) for item in value)]
        else:
            argv += [flag, str(value)]
    return argv


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
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 2 for bad options, 1 if it can't listen."""
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"amigofs emulator: {error}", file=sys.stderr)
        return 2
    level = logging.getLevelName(str(args.log_level).upper())
    if not isinstance(level, int):
        print(f"amigofs emulator: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failure: OSError | None = None
    try:
        trio.run(_main, config, args.host, args.port)
    except* OSError as group:
        failure = _first_os_error(group)
    if failure is not None:
        print(
            f"amigofs emulator: cannot listen on {args.host}:{args.port}: {failure}",
            file=sys.stderr,
        )
        return 1
    return 0


def _first_os_error(group: BaseExceptionGroup[OSError]) -> OSError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, OSError)
    return error


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
            print(listening_line(url), flush=True)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                stop.set()
                break
