"""Checkpoint tars on a Python with extraction filters (3.11.4+) and without (Debian bookworm's 3.11.2)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ktoforge import checkpoint_tar


def make_tar(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:") as tar:
        for name in names:
            data = b"x" * 10
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o4777  # setuid and writable by all: must not survive extraction
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(params=[True, False], ids=["filters", "no-filters"])
def filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filters")
    monkeypatch.setattr(checkpoint_tar, "HAS_FILTERS", request.param)
    return request.param


def test_a_good_checkpoint_unpacks_with_safe_modes(tmp_path: Path, filters: bool) -> None:
    tar = make_tar(tmp_path / "ok.tar", ["checkpoint-3/trainer_state.json", "checkpoint-3/adapter.safetensors"])
    dest = tmp_path / "out"
    dest.mkdir()
    checkpoint_tar.extract(tar, dest, max_bytes=1 << 20)
    written = dest / "checkpoint-3" / "trainer_state.json"
    assert written.read_bytes() == b"x" * 10
    assert written.stat().st_mode & 0o7022 == 0


@pytest.mark.parametrize("name", ["../escape.txt", "checkpoint-3/../../escape.txt"])
def test_a_name_outside_the_folder_is_refused_and_nothing_written(tmp_path: Path, filters: bool, name: str) -> None:
    tar = make_tar(tmp_path / "bad.tar", ["checkpoint-3/ok.json", name])
    dest = tmp_path / "a" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(tarfile.TarError):
        checkpoint_tar.extract(tar, dest, max_bytes=1 << 20)
    assert list(dest.iterdir()) == [] and not (tmp_path / "a" / "escape.txt").exists()


def test_an_absolute_name_never_lands_outside_the_folder(tmp_path: Path, filters: bool) -> None:
    """The data filter strips the leading slash (the file lands inside); without filters it is refused."""
    tar = make_tar(tmp_path / "abs.tar", [str(tmp_path / "escape.txt")])
    dest = tmp_path / "out"
    dest.mkdir()
    try:
        checkpoint_tar.extract(tar, dest, max_bytes=1 << 20)
    except tarfile.TarError:
        assert not filters
    assert not (tmp_path / "escape.txt").exists()
