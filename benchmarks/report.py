"""Figures, the machine description, the summary table, the JSON file and the chart."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(slots=True, frozen=True)
class Figure:
    """One reported number: `value` = `numerator` / `denominator`, both medians over the runs."""

    key: str
    group: str  # "read" (time / memfs ceiling), "bytes" (fetched / size), "other"
    label: str
    value: float | None
    numerator: float | None
    denominator: float | None
    unit: str  # of numerator and denominator


GROUP_TITLES = {
    "read": "read time / memfs ceiling (lower is better; 1 = as fast as memory)",
    "bytes": "bytes fetched from the server / file size",
    "other": "other ratios (see labels)",
}


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_bytes": _meminfo("MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "loadavg_start": _loadavg(),
    }
    info["tools"] = {name: tool_version(name) for name in _TOOLS}
    return info


_TOOLS = {
    "curl": ["curl", "--version"],
    "ffmpeg": ["ffmpeg", "-version"],
    "rsync": ["rsync", "--version"],
    "rclone": ["rclone", "version"],
    "httpdirfs": ["httpdirfs", "--version"],
    "nginx": ["nginx", "-v"],
}


def tool_version(name: str) -> str | None:
    argv = _TOOLS[name]
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout + done.stderr).strip().splitlines()
    named = [line for line in lines if name.lower() in line.lower()]
    chosen = named or lines
    return chosen[0] if chosen else None


def _meminfo(field: str) -> int | None:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _cpu_model() -> str | None:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _loadavg() -> list[float]:
    with open("/proc/loadavg", encoding="ascii") as loadavg:
        return [float(x) for x in loadavg.read().split()[:3]]


def code_version(repo: Path) -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it (uncommitted work)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.rstrip()

    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "uncommitted": git("status", "--porcelain", "--", "amigofs").splitlines(),
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        # A few KB (a peek, a first read) would read as 0.00 MB.
        return f"{value / 1e3:.1f} kB" if 0 < abs(value) < 100_000 else f"{value / 1e6:.2f} MB"
    if unit == "s":
        return f"{value:.3f} s" if value < 100 else f"{value:.0f} s"
    if unit == "count":
        return f"{value:,.0f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}{(' ' + unit) if unit else ''}"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def table(figures: Sequence[Figure]) -> str:
    rows = [("figure", "ratio", "numerator", "denominator")]
    for fig in figures:
        rows.append(
            (
                fig.label,
                _fmt(fig.value),
                _fmt(fig.numerator, fig.unit),
                _fmt(fig.denominator, fig.unit),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


@dataclass(slots=True, frozen=True)
class Target:
    """One row of the read path's targets, in the direction the issue states them."""

    name: str
    value: float | None
    minimum: float
    aim: float | None  # None: the issue states only a minimum
    higher_is_better: bool

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"

        def meets(bound: float) -> bool:
            assert self.value is not None
            return self.value >= bound if self.higher_is_better else self.value <= bound

        return (
            "aim met"
            if self.aim is not None and meets(self.aim)
            else "minimum met"
            if meets(self.minimum)
            else "BELOW MINIMUM"
        )


def targets(figures: Sequence[Figure]) -> list[Target]:
    """The targets as speed ratios (ceiling time / amigofs time): higher is better."""
    by_key = {fig.key: fig for fig in figures}

    def speed(key: str) -> float | None:
        fig = by_key.get(key)
        return None if fig is None or not fig.value else 1 / fig.value

    def value(key: str) -> float | None:
        fig = by_key.get(key)
        return None if fig is None else fig.value

    peak = by_key.get("amigofs.peak_rss")
    reread_fetched = value("amigofs.reread_fetched")
    reread = speed("amigofs.reread")
    if reread is not None and reread_fetched != 0:
        reread = 0.0  # a re-read that fetches again does not count
    rows = [
        Target("cold read / pyfuse3 ceiling (speed)", speed("amigofs.cold"), 0.25, 0.5, True),
        Target(
            "throttled read / single curl (speed)", speed("amigofs.throttled_vs_curl"), 3, 5, True
        ),
        Target("ffmpeg seek: fetched / size", value("amigofs.seek_fetched"), 0.05, 0.01, False),
        Target("re-read after remount / ceiling (speed; 0 bytes fetched)", reread, 0.7, 0.95, True),
        Target(
            "peak RSS, MB",
            None if peak is None or peak.numerator is None else peak.numerator / 1e6,
            300,
            150,
            False,
        ),
    ]
    if any(key.startswith("amigofs.link.") for key in by_key):
        for walk in ("rsync", "tar", "sha256sum"):
            rows += [
                Target(
                    f"link: {walk}: curl script time / amigofs time",
                    value(f"amigofs.link.{walk}.script"),
                    1.0,
                    1.5,
                    True,
                ),
                Target(
                    f"link: {walk}: link-limit time / amigofs time",
                    value(f"amigofs.link.{walk}.limit"),
                    0.3,
                    None,
                    True,
                ),
            ]
    return rows


def targets_table(rows: Sequence[Target]) -> str:
    lines = [f"{'target':58}  {'value':>7}  {'minimum':>7}  {'aim':>6}  verdict"]
    for row in rows:
        shown = "-" if row.value is None else f"{row.value:.3g}"
        aim = "-" if row.aim is None else f"{row.aim:g}"
        lines.append(f"{row.name:58}  {shown:>7}  {row.minimum:>7g}  {aim:>6}  {row.verdict}")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any], figures: Sequence[Figure]) -> None:
    document = {
        **document,
        "figures": [asdict(fig) for fig in figures],
        "targets": [{**asdict(row), "verdict": row.verdict} for row in targets(figures)],
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def title(document: dict[str, Any]) -> str:
    info = document["machine"]
    memory = (info.get("memory_bytes") or 0) / 2**30
    runs = document["settings"]["runs"]
    quick = " (quick)" if document["settings"]["quick"] else ""
    return (
        f"amigofs benchmarks {document['date']}{quick}, median of {runs} run(s)\n"
        f"{info['cores']} cores, {memory:.0f} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}; {info.get('cpu') or ''}"
    )


def write_chart(path: Path, document: dict[str, Any], figures: Sequence[Figure]) -> str | None:
    """A horizontal bar chart per group of ratios; returns why not if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[benchmarks]')"
    groups = [
        (group, [f for f in figures if f.group == group and f.value is not None])
        for group in GROUP_TITLES
    ]
    groups = [(group, figs) for group, figs in groups if figs]
    if not groups:
        return "no figure to draw"
    heights = [max(1.2, 0.38 * len(figs) + 0.8) for _, figs in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(11, sum(heights) + 1.2),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (group, figs) in zip(axes[:, 0], groups, strict=True):
        labels = [f.label for f in figs]
        values = [float(f.value or 0.0) for f in figs]
        colors = ["#1f77b4" if f.key.startswith("amigofs") else "#9a9a9a" for f in figs]
        bars = ax.barh(range(len(figs)), values, color=colors)
        ax.set_yticks(range(len(figs)), labels, fontsize=8)
        ax.invert_yaxis()
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        if group == "read":
            ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(GROUP_TITLES[group], fontsize=9, loc="left")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7, padding=2)
        ax.margins(x=0.15)
    fig.suptitle(title(document), fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
