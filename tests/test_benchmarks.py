"""The benchmarks are not run by the tests (timings on shared machines are noise), but
their command must not rot between runs: its smallest scenario runs whole here, and what
it reports is checked as counts, never as times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("ls -l", "find -type f", "rsync -a --dry-run")


def test_the_quick_tree_benchmark_runs_and_reports_its_request_counts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", "tree", "--runs", "1",
         "--no-drop-caches", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (results,) = tmp_path.glob("bench-*.json")
    document = json.loads(results.read_text())
    assert not document["errors"], document["errors"]
    figures = {f["key"]: f for f in document["figures"]}
    for command in COMMANDS:
        assert f"amigofs.tree.{command}" in figures, sorted(figures)
        requests = figures[f"amigofs.tree_requests.{command}"]
        calls = requests["denominator"]
        assert calls > 100  # more than one page of the listing
        if command == "ls -l":
            # The listing's pages and the root's: no request per call.
            assert requests["numerator"] <= calls // 100 + 2, requests
        else:
            # Each call's urls, metadata and metadata.json: never its audio.
            assert requests["numerator"] <= 3 * calls + 3, requests
