"""Safe archive extraction: members that could escape the target folder, links,
device files and decompression bombs are refused before anything is written."""
from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from stages.common.io import atomic_dir

MAX_TOTAL_BYTES = 20 * 1024**3  # 20 GiB unpacked
MAX_RATIO = 200  # unpacked / packed, per zip member (real data compresses < 20x)


class UnsafeArchiveError(ValueError):
    pass


def _check_name(archive: Path, name: str) -> str:
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member '{name}' has an absolute path; refusing to extract")
    normal = posixpath.normpath(clean)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{clean}/":
        raise UnsafeArchiveError(f"{archive}: member '{name}' points outside the target folder (path traversal)")
    return normal


def extract(archive: str | os.PathLike, dest: str | os.PathLike, members: list[str] | None = None,
            max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Extract `archive` (zip or tar, any compression) into `dest`, atomically.

    `members`: extract only these names (and everything under them when they are folders).
    """
    archive, dest = Path(archive), Path(dest)
    wanted = [m.rstrip("/") for m in members] if members else None

    def selected(name: str) -> bool:
        return wanted is None or any(name == w or name.startswith(w + "/") for w in wanted)

    with atomic_dir(dest) as tmp:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, selected, max_total_bytes)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, selected, max_total_bytes)
        else:
            raise UnsafeArchiveError(f"{archive}: not a zip or tar archive (truncated download?)")
    return dest


def _extract_zip(archive: Path, dest: Path, selected, max_total: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = [i for i in zf.infolist() if selected(_check_name(archive, i.filename))]
        total = 0
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"{archive}: member '{info.filename}' is a symbolic link; refusing to extract")
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchiveError(f"{archive}: member '{info.filename}' is not a regular file; refusing to extract")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
                raise UnsafeArchiveError(f"{archive}: member '{info.filename}' expands {info.file_size / info.compress_size:.0f}x "
                                         f"(limit {MAX_RATIO}x): looks like a zip bomb")
            total += info.file_size
        if total > max_total:
            raise UnsafeArchiveError(f"{archive}: unpacks to {total} bytes, over the {max_total}-byte limit (zip bomb?)")
        for info in tqdm(infos, desc=f"extract {archive.name}", unit="file", mininterval=1.0, disable=None):
            target = dest / _check_name(archive, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                # copy with a hard cap: a header that lies about the size cannot exceed it
                written = 0
                for block in iter(lambda: src.read(1 << 20), b""):
                    written += len(block)
                    if written > info.file_size:
                        raise UnsafeArchiveError(f"{archive}: member '{info.filename}' is larger than its header says")
                    out.write(block)


def _extract_tar(archive: Path, dest: Path, selected, max_total: int) -> None:
    with tarfile.open(archive) as tf:
        members = []
        total = 0
        for member in tf:
            name = _check_name(archive, member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: member '{member.name}' is a link; refusing to extract")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{archive}: member '{member.name}' is a device, fifo or other special file")
            if selected(name):
                members.append(member)
                total += member.size
                if total > max_total:
                    raise UnsafeArchiveError(f"{archive}: unpacks to over {max_total} bytes (tar bomb?)")
        for member in tqdm(members, desc=f"extract {archive.name}", unit="file", mininterval=1.0, disable=None):
            target = dest / _check_name(archive, member.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
