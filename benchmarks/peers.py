"""Peers: other FUSE filesystems over HTTP, reading the same files from nginx.

curl from nginx against the memfs ceiling, then each peer (rclone mount with its VFS cache full
and off, httpdirfs with its cache) as amigofs is measured in benchmarks/read_path.py: cold
read and re-read after a remount against the ceiling, the bytes each fetched, the CPU seconds
per GB its process used for those reads, and the bytes an ffmpeg seek fetched. A peer that is not installed is recorded as failed; the others still run.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from amigofs.emulator.data import Dataset
from benchmarks import procs
from benchmarks.harness import Harness, series
from benchmarks.memfs import PresentedFile, config_from_knobs, presented_file, recordings
from benchmarks.read_path import ceiling, cpu_figure, cpu_seconds
from benchmarks.report import median
from tests.mounting import Mount


def run(harness: Harness) -> None:
    s = harness.settings
    knobs = harness.knobs(calls_per_workspace=2, long_calls=2, long_duration=s.long_duration)
    data = Dataset(config_from_knobs(knobs))
    files = [
        (presented_file(data, rec, "outbound.wav"), presented_file(data, rec, "inbound.wav"))
        for rec in recordings(data)
    ]
    www = harness.work.new("www")
    for pair in files:
        for pf in pair:
            target = www / pf.workspace_id / pf.call_sid / pf.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(pf.build(data))
            target.chmod(0o644)
    for directory in www.rglob("*"):
        if directory.is_dir():
            directory.chmod(0o755)
    size, inbound_size = files[0][0].size, files[0][1].size
    at = s.long_duration / 2
    raw: dict[str, Any] = {
        "file_bytes": size,
        "inbound_bytes": inbound_size,
        "seek_s": at,
        "memfs_s": harness.memfs_read_s,
        "peers": {},
    }
    harness.raw["peers"] = raw
    rclone_conf = harness.work.path / "rclone.conf"
    rclone_conf.touch()
    peers = _peer_commands(rclone_conf)
    if harness.memfs_read_s is None:
        harness.memfs_read_s = ceiling(harness, knobs, [pair[0] for pair in files])
        raw["memfs_s"] = harness.memfs_read_s
    with procs.nginx(www, harness.work.new("nginx")) as server:
        harness.progress(f"nginx at {server.url} serving {len(files) * 2} files")
        curl_s = []
        for run in range(s.runs):
            pf = files[run % len(files)][0]
            rel = Path(pf.workspace_id, pf.call_sid, pf.name)
            seconds, got = harness.curl(f"{server.url}/{rel}", auth=False)
            if got != size:
                raise RuntimeError(f"curl from nginx got {got} bytes, expected {size}")
            curl_s.append(seconds)
        raw["curl_nginx_s"] = curl_s
        harness.figure(
            "curl.nginx",
            "read",
            "curl from nginx / memfs",
            median(curl_s),
            harness.memfs_read_s,
            "s",
        )
        for name, argv in peers.items():
            harness.scenario(
                f"peer {name}",
                lambda name=name, argv=argv: peer(  # type: ignore[misc]
                    harness, name, argv, server, data, files
                ),
            )


def peer(
    harness: Harness,
    name: str,
    argv: Callable[[str, Path, Path], list[str]],
    server: procs.Nginx,
    data: Dataset,
    files: list[tuple[PresentedFile, PresentedFile]],
) -> None:
    s = harness.settings
    raw = series(
        "cold_s",
        "cold_fetched",
        "warm_s",
        "warm_fetched",
        "cold_cpu_s",
        "warm_cpu_s",
        "seek_s",
        "seek_fetched",
    )
    harness.raw["peers"]["peers"][name] = raw
    binary = argv("http://x", Path("m"), Path("c"))[0]
    if not _which(binary):
        raise RuntimeError(f"{binary} is not installed (apt-get install {binary})")
    at = s.long_duration / 2
    log_path = harness.work.path / f"{name}.log"

    @contextlib.contextmanager
    def mounted(cache: Path) -> Iterator[Mount]:
        mountpoint = harness.work.new("mnt")
        with procs.benchmark_mount(
            name, argv(server.url, mountpoint, cache), mountpoint, log_path
        ) as mnt:
            yield mnt
        server.wait_idle()

    for run in range(s.runs):
        out, inb = files[run % len(files)]
        rel = Path(out.workspace_id, out.call_sid, out.name)
        cache = harness.work.new("cache")
        for key in ("cold", "warm"):
            offset = server.log_offset()
            with mounted(cache) as mnt:
                (mnt.path / rel.parent).stat()
                cpu = cpu_seconds(mnt.process.pid)
                raw[f"{key}_s"].append(harness.read_one(mnt.path / rel, out.size))
                raw[f"{key}_cpu_s"].append(cpu_seconds(mnt.process.pid) - cpu)
                if key == "cold":
                    harness.verify(mnt.path / rel, out, data)
            raw[f"{key}_fetched"].append(server.bytes_sent(offset, f"/{rel}")[0])
        inrel = Path(inb.workspace_id, inb.call_sid, inb.name)
        offset = server.log_offset()
        with mounted(harness.work.new("cache")) as mnt:
            (mnt.path / inrel.parent).stat()
            raw["seek_s"].append(harness.ffmpeg(mnt.path / inrel, at))
        raw["seek_fetched"].append(server.bytes_sent(offset, f"/{inrel}")[0])
        harness.progress(
            f"run {run + 1}/{s.runs}: {name}: cold {raw['cold_s'][-1]:.3f}s"
            f" warm {raw['warm_s'][-1]:.3f}s (fetched {raw['warm_fetched'][-1] / 1e6:.1f} MB)"
            f" CPU {raw['cold_cpu_s'][-1]:.2f} / {raw['warm_cpu_s'][-1]:.2f} s"
            f" ffmpeg seek fetched {raw['seek_fetched'][-1] / 1e6:.2f} MB"
        )
    out_size, in_size = files[0][0].size, files[0][1].size
    for key, group, label, base, unit in (
        ("cold", "read", "cold read / memfs", harness.memfs_read_s, "s"),
        ("warm", "read", "re-read after remount / memfs", harness.memfs_read_s, "s"),
        ("cold_fetched", "bytes", "cold read: fetched / size", out_size, "bytes"),
        ("warm_fetched", "bytes", "re-read after remount: fetched / size", out_size, "bytes"),
        (
            "seek_fetched",
            "bytes",
            f"ffmpeg -ss {at:g} -t {s.ffmpeg_seconds:g}: fetched / size",
            in_size,
            "bytes",
        ),
    ):
        column = key if key.endswith("_fetched") else f"{key}_s"
        harness.figure(f"{name}.{key}", group, f"{name} {label}", median(raw[column]), base, unit)
    for key, label in (("cold", "cold read"), ("warm", "re-read after remount")):
        cpu_figure(harness, f"{name}.{key}_cpu", f"{name} {label}", raw[f"{key}_cpu_s"], out_size)


def _peer_commands(rclone_conf: Path) -> dict[str, Callable[[str, Path, Path], list[str]]]:
    """Each peer's command line, given the server URL, mount point and cache directory."""
    peers = {f"rclone-{mode}": _rclone(mode, rclone_conf) for mode in ("full", "off")}
    # --no-range-check: httpdirfs 1.2.5's check wrongly fails against nginx (httpdirfs #188).
    peers["httpdirfs-cache"] = lambda url, mnt, cache: [
        "httpdirfs", "-f", "--no-range-check", "--cache", "--cache-location", str(cache),
        url + "/", str(mnt),
    ]  # fmt: skip
    # httpdirfs without --cache is left out: here it reads ~1 MB/s (128 KiB requests, one at
    # a time, ~0.1 s each), which would make a full run last an hour.
    return peers


def _rclone(mode: str, conf: Path) -> Callable[[str, Path, Path], list[str]]:
    def argv(url: str, mountpoint: Path, cache: Path) -> list[str]:
        return [
            "rclone",
            "mount",
            ":http:",
            str(mountpoint),
            "--http-url",
            url + "/",
            "--read-only",
            "--vfs-cache-mode",
            mode,
            "--cache-dir",
            str(cache),
            "--config",
            str(conf),
            "--dir-cache-time",
            "1h",
        ]

    return argv


def _which(binary: str) -> bool:
    return shutil.which(binary) is not None
