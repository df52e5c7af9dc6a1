"""The completion script and the man page as the shells and groff read them: bash
completes commands, flags, choices and paths with the generated script; zsh and groff
take theirs without a complaint. (No mount: these need a shell, so not the unit tier.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from amigofs.commands import cli
from amigofs.commands.completion import bash_script, zsh_script
from amigofs.commands.manpage import man_page
from amigofs.commands.reference import commands

DEADLINE = 30.0


def _bash_completions(tmp_path: Path, *lines: str) -> list[list[str]]:
    """What bash offers for each command line (words separated by spaces; a trailing
    space: a new, empty word), with the generated script loaded."""
    script = tmp_path / "amigofs.bash"
    script.write_text(bash_script(*commands(cli.build_parser())))
    calls = "\n".join(f"t {' '.join(repr(w) for w in line.split(' '))}" for line in lines)
    program = f"""
source {script}
t() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=()
    _amigofs; printf '%s|' "${{COMPREPLY[@]}}"; echo
}}
{calls}
"""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    assert result.stderr == ""
    return [sorted(filter(None, out.split("|"))) for out in result.stdout.splitlines()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_flags_choices_and_paths(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    (tmp_path / "my cache").mkdir()
    (tmp_path / "amigofs.toml").write_text("")
    offered = _bash_completions(
        tmp_path,
        "amigofs mo",
        "amigofs mount --cache-",
        "amigofs mount --log-level ",
        "amigofs mount --config ",
        "amigofs mount --cache-dir my",
        "amigofs mount --timeout ",
        "amigofs mount -f ",
        "amigofs completion ",
        "amigofs mount -o cache_s",
        "amigofs mount -o allow_o",
    )
    assert offered == [
        ["mount"],
        ["--cache-dir", "--cache-min-free", "--cache-size"],
        ["debug", "error", "info", "warning"],
        ["amigofs.bash", "amigofs.toml", "mnt", "my cache"],
        ["my cache"],  # a directory, whole, spaces and all
        [],  # a duration: nothing to offer
        ["mnt", "my cache"],  # the mount point: directories only
        ["bash", "zsh"],
        ["cache_size="],  # -o's options by name, the value to follow
        ["allow_other"],
    ]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh")
def test_zsh_reads_its_script(tmp_path: Path) -> None:
    script = tmp_path / "_amigofs"
    script.write_text(zsh_script(*commands(cli.build_parser())))
    result = subprocess.run(
        ["zsh", "-n", str(script)], capture_output=True, text=True, timeout=DEADLINE
    )
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("groff") is None, reason="no groff")
def test_groff_reads_the_man_page_without_a_warning(tmp_path: Path) -> None:
    page = tmp_path / "amigofs.1"
    page.write_text(man_page(*commands(cli.build_parser())))
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=DEADLINE
    )
    assert (result.returncode, result.stderr) == (0, "")
