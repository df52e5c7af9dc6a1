"""The block writer's system calls per block (issue 22, CPU): the fetch worker now
writes a block at a time, as each fills, so what the writer asks per call is asked
per block. Whether the directory was removed is asked once per block, after it is in
place (a directory removed before is found then, and the block written again:
tests/unit/test_cache_dir.py), and the process's id once per writer."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from amigofs.cache.block_format import FileKey
from amigofs.cache.block_writer import BlockWriter
from tests.unit.block_doubles import block_file
from tests.unit.test_cache_dir import open_disk

BLOCK = 64 << 10
BLOCKS = 8


def test_a_block_at_a_time_costs_one_check_of_the_directory_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    key = FileKey("ws", "call", "a.wav", BLOCKS * BLOCK)
    open_disk(root).close()
    data = memoryview(random.Random(7).randbytes(BLOCKS * BLOCK))
    calls = {"fstat": 0, "getpid": 0}
    real_fstat, real_getpid = os.fstat, os.getpid

    def fstat(*args: Any, **kwargs: Any) -> os.stat_result:
        calls["fstat"] += 1
        return real_fstat(*args, **kwargs)

    def getpid() -> int:
        calls["getpid"] += 1
        return real_getpid()

    with BlockWriter(str(root), key.relative_dir, BLOCK) as writer:
        writer.write(0, data[:BLOCK])  # opens the directories (their checks, once)
        monkeypatch.setattr(os, "fstat", fstat)
        monkeypatch.setattr(os, "getpid", getpid)
        for index in range(1, BLOCKS):
            writer.write(index * BLOCK, data[index * BLOCK : (index + 1) * BLOCK])
    monkeypatch.undo()
    assert calls == {"fstat": BLOCKS - 1, "getpid": 0}
    for index in range(BLOCKS):
        block = block_file(root / key.relative_dir, index).read_bytes()
        assert block.endswith(data[index * BLOCK : (index + 1) * BLOCK])
