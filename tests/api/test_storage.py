"""Storage writes: streamed uploads are hashed, size-capped and never left half-written."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ktoforge_api.storage import Storage, TooLarge


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_receive_hashes_and_counts(tmp_path: Path):
    storage = Storage(tmp_path)
    tmp, digest, size = asyncio.run(storage.receive(_stream(b"ab", b"cd"), limit=4))
    assert (tmp.read_bytes(), digest, size) == (b"abcd", hashlib.sha256(b"abcd").hexdigest(), 4)


def test_receive_past_limit_leaves_nothing(tmp_path: Path):
    storage = Storage(tmp_path)
    with pytest.raises(TooLarge):
        asyncio.run(storage.receive(_stream(b"ab", b"cde"), limit=4))
    assert not any(storage.tmp.iterdir())


def test_artifact_names_cannot_escape(tmp_path: Path):
    storage = Storage(tmp_path)
    job = "a" * 32
    assert storage.artifact_path(job, "adapter.tar") == storage.artifacts / job / "adapter.tar"
    for bad in ("..", ".env", "a/b", "../x", "a\\b", "", "x" * 129, "a\x00b", "abc\n"):
        assert storage.artifact_path(job, bad) is None, bad
    assert storage.artifact_path("../" + "a" * 29, "x") is None
