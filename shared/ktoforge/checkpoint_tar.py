"""Checkpoint tars read safely, on both sides: by the API when one arrives, by a worker before it unpacks one.

A worker sends a checkpoint as a plain, uncompressed tar (``WorkerClient.upload_checkpoint``), so reading
with ``"r:"`` refuses every compression: tarfile's default ``"r:*"`` turned a 15 KB xz file into 100 MiB on
disk. The members are counted and their sizes summed before anything is written, because the size of a tar
says nothing of what it unpacks to (a GNU sparse member of 1.5 KB claims 10 GiB). Only files and folders,
and only names that stay inside the checkpoint's folder (tarfile's "data" filter, or the same rule by hand on a
Python without it), are accepted.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

# A checkpoint holds about ten files (adapter, optimizer, scheduler, RNG and trainer state, tokenizer files);
# a thousand is generous, and bounds the headers read and the inodes written.
MAX_MEMBERS = 1000
_NOWHERE = "/checkpoint"  # where names are checked against when nothing is unpacked (the API only inspects)
# Extraction filters came in Python 3.11.4; Debian bookworm's python3.11 (3.11.2, the stand-in image of the
# compose test, and many hosts) has none: there the same rule for names is applied by hand.
HAS_FILTERS = hasattr(tarfile, "data_filter")


def open_plain(path: Path) -> tarfile.TarFile:
    """The tar at ``path``, uncompressed only; ReadError saying so for anything else."""
    try:
        return tarfile.open(path, "r:")
    except tarfile.ReadError as exc:
        raise tarfile.ReadError(f"not a plain tar ({exc}); a checkpoint is sent as an uncompressed tar") from None


def checked_members(tar: tarfile.TarFile, max_bytes: int, dest: str | Path = _NOWHERE) -> list[tarfile.TarInfo]:
    """Every member, read header by header; TarError at the first one over a limit or of a refused kind."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        members.append(member)
        if len(members) > MAX_MEMBERS:
            raise tarfile.TarError(f"the checkpoint tar has more than {MAX_MEMBERS} members")
        if not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"the checkpoint tar holds {member.name!r}, neither a file nor a folder")
        _check_name(member, dest)
        total += member.size
        if total > max_bytes:
            raise tarfile.TarError(f"the checkpoint unpacks to more than {max_bytes >> 20} MiB "
                                   "(KTOFORGE_MAX_WORKER_UPLOAD_MB)")
    return members


def _check_name(member: tarfile.TarInfo, dest: str | Path) -> None:
    """TarError for a name that would land outside ``dest`` (tarfile's "data" filter where it exists)."""
    if HAS_FILTERS:
        tarfile.data_filter(member, str(dest))  # FilterError (a TarError)
        return
    root = os.path.abspath(dest)
    target = os.path.abspath(os.path.join(root, member.name))
    if os.path.isabs(member.name) or ".." in Path(member.name).parts or not target.startswith(root + os.sep):
        raise tarfile.TarError(f"the checkpoint tar holds {member.name!r}, a name outside its folder")
    member.mode &= 0o755  # as the data filter does: no setuid/setgid, nothing writable by others


def inspect(path: Path, max_bytes: int) -> int:
    """Check a tar without unpacking it (the API, when a worker uploads one); its member count."""
    with open_plain(path) as tar:
        return len(checked_members(tar, max_bytes))


def extract(path: Path, dest: Path, max_bytes: int) -> None:
    """Unpack into ``dest`` only what passed every check, checked again by the "data" filter as it is written."""
    with open_plain(path) as tar:
        members = checked_members(tar, max_bytes, dest)
        tar.extractall(dest, members=members, **({"filter": "data"} if HAS_FILTERS else {}))
