"""Fixtures: each test gets its own simulator (on a free port) and its own temporary folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bitbucket_diy


@pytest.fixture
def sim() -> Iterator[bitbucket_diy.Simulator]:
    """A simulator that drains quickly."""
    with bitbucket_diy.Simulator(drain_delay=0.05) as simulator:
        yield simulator


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A tiny sample home of real git repositories."""
    return bitbucket_diy.sample_home(tmp_path / "home")


def make_config(sim: bitbucket_diy.Simulator, home: Path, tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A configuration dict for `sim` and `home`, with folders under `tmp_path`; keyword
    arguments update whole sections."""
    config: dict[str, Any] = {
        "bitbucket": sim.bitbucket_config(),
        "filesystem": {"home": home},
        "archive": {"folder": tmp_path / "archives"},
        "backup": {"working_folder": tmp_path / "work", "poll_interval": "10ms"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture
def config(sim: bitbucket_diy.Simulator, home: Path, tmp_path: Path) -> dict[str, Any]:
    """A configuration backing up `home` through `sim` into `tmp_path`."""
    return make_config(sim, home, tmp_path)


def tree_files(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, by relative path, with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}
