"""Read files sequentially, 1 MiB at a time, and print how long each took as JSON.

    python benchmarks/reader.py FILE...   ->  {"seconds": [...], "bytes": [...]}

Run as a child process so the harness can put a deadline on a read that hangs (and kill it);
the child times itself, so its start-up is not counted. Each time covers open() to EOF.
"""

from __future__ import annotations

import json
import sys
import time

CHUNK = 1 << 20


def read_file(path: str) -> tuple[float, int]:
    buffer = bytearray(CHUNK)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            total += count
    return time.perf_counter() - start, total


def main(paths: list[str]) -> int:
    seconds: list[float] = []
    sizes: list[int] = []
    for path in paths:
        elapsed, total = read_file(path)
        seconds.append(elapsed)
        sizes.append(total)
    print(json.dumps({"seconds": seconds, "bytes": sizes}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
