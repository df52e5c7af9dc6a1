"""The settings: a flag beats the environment, which beats the file, which beats the
default; `-o key=value` and fstab options read as the same key does; each default is
written once (amigofs.config.Settings), and the mount takes the settings as they are."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amigofs import config
from amigofs.commands import cli
from amigofs.commands.arguments import UsageError, mount_settings
from amigofs.commands.mount_options import OptionError, mount_arguments, option_flags
from amigofs.daemon.mount import MAX_RECORDS, client_config, namespace_config
from amigofs.fs.namespace import NamespaceConfig

DEFAULTS = config.Settings()

# --- the order of the sources ---------------------------------------------------------------

# For a few keys of each kind: a value as a flag's parser gives it, as the environment
# writes it, and as a TOML file does.
_SECONDS = st.integers(1, 10_000).map(lambda n: (float(n), str(n), str(n)))
_SIZES = st.integers(16, 1 << 14).map(lambda n: (n << 20, f"{n}M", f'"{n}M"'))
_SWITCH = st.booleans().map(lambda b: (b, "1" if b else "0", "true" if b else "false"))
_LEVELS = st.sampled_from(config.LOG_LEVELS).map(lambda v: (v, v, f'"{v}"'))
_KINDS = {
    "timeout": _SECONDS,
    "listing_ttl": _SECONDS,
    "negative_ttl": _SECONDS,
    "cache_size": _SIZES,
    "cache_min_free": _SIZES,
    "allow_other": _SWITCH,
    "call_wav": _SWITCH,
    "log_level": _LEVELS,
}
_Given = tuple[Any, str, str]


def _sources() -> st.SearchStrategy[dict[str, tuple[_Given | None, _Given | None, _Given | None]]]:
    """For each key: its value from a flag, the environment and the file, or None."""
    return st.fixed_dictionaries(
        {key: st.tuples(*[st.none() | kind] * 3) for key, kind in _KINDS.items()}
    )


@given(_sources())
def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
    sources: dict[str, tuple[_Given | None, _Given | None, _Given | None]],
) -> None:
    flags = {key: flag[0] for key, (flag, _, _) in sources.items() if flag}
    environ = {
        config.ENV_PREFIX + key.upper(): env[1] for key, (_, env, _) in sources.items() if env
    }
    lines = [f"{key} = {file[2]}" for key, (_, _, file) in sources.items() if file]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "amigofs.toml"
        path.write_text("\n".join(lines) + "\n")
        settings = config.resolve(flags, environ, path)
    for key, (flag, env, file) in sources.items():
        first = flag or env or file
        assert getattr(settings, key) == (first[0] if first else getattr(DEFAULTS, key)), key


def _parsed(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process's environment without AMIGOFS_* settings; a test sets its own."""
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_commands_flags_resolve_over_the_environment(environ: pytest.MonkeyPatch) -> None:
    # Nothing given anywhere: exactly the defaults.
    assert mount_settings(_parsed("mount")) == DEFAULTS
    environ.setenv("AMIGOFS_TIMEOUT", "45")
    environ.setenv("AMIGOFS_LISTING_TTL", "90")
    settings = mount_settings(_parsed("mount", "/mnt/a", "--timeout", "7", "--debug"))
    assert (settings.timeout, settings.listing_ttl, settings.log_level) == (7.0, 90.0, "debug")
    assert settings.mountpoint == Path("/mnt/a")


def test_a_config_file_from_the_environment_is_read(
    environ: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "amigofs.toml"
    path.write_text('negative_ttl = 9\ncache_dir = "cache"\n')
    environ.setenv("AMIGOFS_CONFIG", str(path))
    settings = mount_settings(_parsed("workspaces"))
    assert settings.negative_ttl == 9.0
    assert settings.cache_dir == tmp_path / "cache"  # relative to the file


def test_a_bad_workspace_flag_is_named_as_the_flag(environ: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"^--workspace: 'nope' is not a workspace id"):
        mount_settings(_parsed("mount", "/mnt/a", "--workspace", "nope"))


# --- -o and fstab options -----------------------------------------------------------------

_OPTION_VALUES = {
    "timeout": "12.5",
    "listing_ttl": "300",
    "negative_ttl": "1",
    "cache_size": "20G",
    "cache_min_free": "0",
    "kernel_readahead": "256K",
    "timezone": "Europe/Berlin",
    "log_level": "warning",
    "base_url": "https://api.example.com",
    "api_key_file": "/etc/amigofs/key",
    "cache_dir": "/var/cache/amigofs",
}


@given(
    st.lists(st.sampled_from(sorted(_OPTION_VALUES)), unique=True),
    st.sets(st.sampled_from(["allow_other", "insecure_http", "no_call_wav"])),
)
def test_an_option_sets_what_its_key_in_the_environment_sets(
    valued: list[str], switches: set[str]
) -> None:
    options = [f"{key}={_OPTION_VALUES[key]}" for key in valued] + sorted(switches)
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(config.ENV_PREFIX):
                patch.delenv(name)
        # Ignored options (for mount(8) and systemd) change nothing.
        args = _parsed(*mount_arguments("/mnt/a", [",".join([*options, "_netdev", "x-a.b"])]))
        from_options = mount_settings(args)
    environ = {config.ENV_PREFIX + key.upper(): _OPTION_VALUES[key] for key in valued}
    environ |= {config.ENV_PREFIX + s.upper(): "1" for s in switches if s != "no_call_wav"}
    if "no_call_wav" in switches:
        environ[config.ENV_PREFIX + "CALL_WAV"] = "0"
    from_environment = config.resolve({"mountpoint": Path("/mnt/a")}, environ, None)
    assert from_options == from_environment


def test_options_become_the_flags_they_stand_for() -> None:
    uuids = ["3f0c0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6", "77aa0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6"]
    assert option_flags([f"workspaces={uuids[0]}:{uuids[1]},debug", "config=~/a.toml,ro"]) == [
        "--workspace", uuids[0], "--workspace", uuids[1], "--debug", "--config", "~/a.toml",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("timeout=0", "option timeout=: must be more than 0, not 0.0"),
        ("timout=5", "unknown option 'timout' (did you mean timeout?)"),
        ("allow_other=yes", "option allow_other takes no value (just allow_other)"),
        ("cache_size=", "option cache_size= needs a value (cache_size=...)"),
        ("api_key=x", "the API key itself is never a setting"),
    ],
)
def test_a_bad_option_is_named_as_it_was_typed(option: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        option_flags([option])
    assert message in str(caught.value)


# --- each default once ------------------------------------------------------------------------


def test_the_defaults_are_those_the_documentation_names() -> None:
    # README and `amigofs mount --help`: what a mount with no settings does.
    assert (DEFAULTS.timeout, DEFAULTS.listing_ttl, DEFAULTS.negative_ttl) == (30.0, 60.0, 5.0)
    assert (DEFAULTS.cache_size, DEFAULTS.cache_min_free) == (4 << 30, 1 << 30)
    assert (DEFAULTS.kernel_readahead, DEFAULTS.log_level) == (1 << 20, "info")
    assert DEFAULTS.call_wav and not DEFAULTS.allow_other and DEFAULTS.timezone is None


def test_the_help_shows_the_defaults_of_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["mount", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 30)", "(default: 60)", "(default: 5)", "(default: 4G)",
                  "(default: 1G)", "(default: 1M;", "info (default)",
                  f"(default: {DEFAULTS.base_url})"):  # fmt: skip
        assert shown in help_text, shown


def _tree(settings: config.Settings) -> NamespaceConfig:
    return namespace_config(
        settings, identity="id", max_readahead=1 << 20, control=lambda: b"", walk_room=lambda: 0
    )


def test_the_mount_derives_its_options_from_the_default_settings() -> None:
    client = client_config(DEFAULTS)
    # The reader's 16 connections, and those of the records loaded ahead of a walk.
    assert (client.base_url, client.max_connections) == (
        DEFAULTS.base_url, 16 + DEFAULTS.records_in_flight,
    )  # fmt: skip
    assert (client.connect_timeout, client.read_timeout, client.retry.deadline) == (10, 10, 24)
    tree = _tree(DEFAULTS)
    assert (tree.listing_ttl, tree.negative_ttl, tree.failure_memory) == (60.0, 5.0, 2.0)
    assert (tree.max_records, tree.views, tree.timezone, tree.workspaces) == (
        MAX_RECORDS, True, None, None,
    )  # fmt: skip


@given(
    st.floats(0.01, 1e6),
    st.floats(0.01, 1e6),
    st.floats(0.01, 1e6),
    st.sampled_from([None, "UTC", "Europe/Berlin"]),
)
def test_the_mount_takes_every_setting_as_given(
    timeout: float, listing_ttl: float, negative_ttl: float, timezone: str | None
) -> None:
    settings = dataclasses.replace(
        DEFAULTS,
        timeout=timeout,
        listing_ttl=listing_ttl,
        negative_ttl=negative_ttl,
        timezone=timezone,
        workspaces=("3f0c0e6a-1b2c-4d5e-8f90-a1b2c3d4e5f6",),
    )
    tree = _tree(settings)
    assert (tree.listing_ttl, tree.negative_ttl, tree.timezone) == (
        listing_ttl, negative_ttl, timezone,
    )  # fmt: skip
    assert tree.workspaces == settings.workspaces
    # No file operation waits longer than --timeout, its network requests less.
    assert client_config(settings).retry.deadline < timeout
    assert tree.failure_memory <= timeout


def test_the_mount_names_every_field_of_the_trees_settings() -> None:
    # None left to a default of NamespaceConfig's: a new field needs a decision here.
    named = _tree(DEFAULTS)
    without_defaults = NamespaceConfig(
        **{field.name: getattr(named, field.name) for field in dataclasses.fields(NamespaceConfig)}
    )
    assert named == without_defaults
    assert named.identity == "id" and named.max_readahead == 1 << 20 and named.control is not None


# --- sizes ------------------------------------------------------------------------------------


@given(st.integers(16 << 20, 1 << 50))
def test_a_size_reads_back_as_it_is_written(size: int) -> None:
    shown = config.format_size(size)
    assert config.parse_size(shown) == size
    assert config.parse_min_free(shown) == size


@given(st.integers(0, 1 << 40), st.sampled_from(["K", "M", "G", "T"]))
def test_a_size_is_written_in_the_largest_unit_that_divides_it(number: int, unit: str) -> None:
    size = number << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]
    shown = config.format_size(size)
    assert config.parse_min_free(shown) == size
    number, unit = (shown[:-1], shown[-1]) if shown[-1] in "KMGT" else (shown, "")
    if size and unit != "T":
        assert int(number) % 1024 != 0, shown


@pytest.mark.parametrize(
    ("text", "size"), [("512M", 512 << 20), ("20G", 20 << 30), ("1.5G", 3 << 29), ("20GiB", 20 << 30),
                       ("16777216", 16 << 20), (" 2t ", 2 << 40)],
)  # fmt: skip
def test_sizes_as_people_write_them(text: str, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize("text", ["15M", "-1G", "lots", "", "infG", True])
def test_a_cache_size_that_cannot_be_is_refused(text: object) -> None:
    with pytest.raises(ValueError):
        config.parse_size(text)
