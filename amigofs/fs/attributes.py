"""What the tree says of a node: its attributes, and a directory's entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

InodeT = NewType("InodeT", int)

# Recordings never change once stored: the kernel may keep their entries and
# attributes for a long time.
IMMUTABLE_TIMEOUT = 24 * 3600.0


@dataclass(slots=True, frozen=True)
class Attributes:
    inode: InodeT
    is_dir: bool
    size: int
    mtime_ns: int
    nlink: int
    timeout: float
    private: bool = False  # readable by the owner only (the control file)
    link: str | None = None  # a symbolic link to this (relative) target


@dataclass(slots=True, frozen=True)
class DirEntry:
    name: str
    attrs: Attributes
