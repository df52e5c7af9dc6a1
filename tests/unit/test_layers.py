"""The layers point down: no module imports one of a layer above its own.

docs/design.md draws them; this keeps the drawing true. A call up the
layers (the fetch worker importing the commands' logging set-up, the cache calling
back into records) is how the house got tangled before: it now fails here, in
milliseconds, with the import that does it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import amigofs

PACKAGE = Path(amigofs.__file__).parent

# Lower numbers are lower layers; a module may import its own layer and those below.
LAYERS = {
    "policy": 0,  # decisions as plain code: imports nothing of amigofs but itself
    "concurrency": 0,
    "logs": 0,
    "api": 1,
    "config": 2,
    "cache": 2,
    "fs": 3,
    "daemon": 4,
    "commands": 5,
    "__main__": 6,
    "__init__": 0,
}
# The emulator is the independent ground truth tests check amigofs against: it
# imports nothing of amigofs outside itself (its own G.711 and WAV code included).
STANDALONE = {"emulator"}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_parts(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "amigofs" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def test_every_import_points_down_or_sideways() -> None:
    upward = []
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50  # the package itself, not an empty folder
    for path in modules:
        part = _part(path)
        for imported, line in _imported_parts(path):
            if imported == part:
                continue
            if part in STANDALONE or imported in STANDALONE:
                allowed = part == "commands" and imported in STANDALONE  # demo, emulator
            else:
                allowed = LAYERS[imported] <= LAYERS[part]
            if not allowed:
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports amigofs.{imported}"
                )
    assert upward == []


def test_the_policy_layer_needs_no_trio_sqlite_or_io() -> None:
    heavy = {"trio", "sqlite3", "httpx", "pyfuse3", "os", "socket", "subprocess"}
    found = []
    for path in sorted((PACKAGE / "policy").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in heavy]
    assert found == []
