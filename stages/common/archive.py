"""Safe archive extraction: members that could escape the target folder, links,
device files and decompression bombs are refused before anything is written, and
a damaged archive is a clear error. Extraction is atomic: the target folder
appears, complete, only when every member was written."""

from __future__ import annotations

import contextlib
import errno
import gzip
import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from stages.common.cli import StageError
from stages.common.io import atomic_dir

MAX_TOTAL_BYTES = 20 * 1024**3  # 20 GiB unpacked
MAX_RATIO = 200  # unpacked / packed, per zip member and per archive (real data compresses < 20x) ...
RATIO_FLOOR = 50 * 1024**2  # ... once past 50 MiB: small, very repetitive files (test data) are harmless
MAX_MEMBERS = 2_000_000  # many tiny entries exhaust inodes as surely as big ones exhaust disk
COPY_BLOCK = 1 << 20
TAR_TRAILER_CHECKED = 1 << 20

# what zipfile/tarfile and their decompressors raise on damaged input
_DAMAGED = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    gzip.BadGzipFile,
    NotImplementedError,
    UnicodeDecodeError,
)
# OSErrors that damaged archives cause: seeks to bad offsets, bad compressed streams (no errno), member names
# that clash (a file where a folder must be) or that no file system accepts
_CONTENT_ERRNOS = {None, errno.EINVAL, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EILSEQ}


class UnsafeArchiveError(StageError, ValueError):
    pass


class CorruptArchiveError(UnsafeArchiveError):
    """Truncated, tampered with, or not the archive that was expected."""


def _check_name(archive: Path, name: str) -> str:
    if not name:  # a damaged central directory: zipfile itself fails on it (is_dir() indexes the name)
        raise CorruptArchiveError(f"{archive}: a member has an empty name; the archive is damaged, download it again")
    clean = name.replace("\\", "/")
    if "\x00" in clean:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL byte in its name; refusing to extract")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member '{name}' has an absolute path; refusing to extract")
    normal = posixpath.normpath(clean)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{clean}/":
        raise UnsafeArchiveError(f"{archive}: member '{name}' points outside the target folder (path traversal)")
    return normal


def extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    members: list[str] | None = None,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> Path:
    """Extract `archive` (zip or tar, any compression) into `dest`, atomically.

    `members`: extract only these names (and everything under them when they are folders);
    each must exist in the archive.
    """
    archive, dest = Path(archive), Path(dest)
    wanted = [m.rstrip("/") for m in members] if members else None

    def selected(name: str) -> bool:
        return wanted is None or any(name == w or name.startswith(w + "/") for w in wanted)

    with atomic_dir(dest) as tmp:
        with _damage_reported(archive):
            if zipfile.is_zipfile(archive):
                names = _extract_zip(archive, tmp, selected, max_total_bytes)
            elif tarfile.is_tarfile(archive):
                names = _extract_tar(archive, tmp, selected, max_total_bytes)
            else:
                raise _not_an_archive(archive)
        for w in wanted or []:
            if not any(n == w or n.startswith(w + "/") for n in names):
                raise CorruptArchiveError(f"{archive}: has no member '{w}' (is it the right file for this dataset?)")
    return dest


def read_members(
    archive: str | os.PathLike, selected: Callable[[str], bool], max_total_bytes: int = MAX_TOTAL_BYTES
) -> Iterator[tuple[str, bytes]]:
    """Yield (normalised name, content) of the regular-file members `selected` picks, in archive order,
    without writing anything: for data read straight from its verified archive (one file for DVC to hash
    instead of thousands). Bombs and damage are refused as in `extract`; links and special files are
    never read."""
    archive = Path(archive)
    total = 0
    with _damage_reported(archive):
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = _check_name(archive, info.filename)
                    if (
                        info.is_dir()
                        or stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG)
                        or not selected(name)
                    ):
                        continue
                    _check_ratio(archive, f"member '{info.filename}'", info.file_size, info.compress_size)
                    total += info.file_size
                    _check_total(archive, total, max_total_bytes)
                    with zf.open(info) as src:
                        yield name, src.read()
        elif tarfile.is_tarfile(archive):
            packed = archive.stat().st_size
            with tarfile.open(archive) as tf:
                for member in tf:
                    name = _check_name(archive, member.name)
                    if not member.isfile() or not selected(name):
                        continue
                    total += member.size
                    _check_total(archive, total, max_total_bytes)
                    _check_ratio(archive, "the archive", total, packed)
                    with tf.extractfile(member) as src:
                        yield name, src.read()
                _check_tar_end(archive, tf)
        else:
            raise _not_an_archive(archive)


@contextlib.contextmanager
def _damage_reported(archive: Path):
    """What zipfile/tarfile raise on a damaged archive, as one CorruptArchiveError that says what to do."""
    try:
        yield
    except (*_DAMAGED, OSError) as err:
        if isinstance(err, OSError) and err.errno not in _CONTENT_ERRNOS:
            raise  # disk full, permissions: not the archive's fault
        raise CorruptArchiveError(
            f"{archive}: damaged archive ({type(err).__name__}: {err}); delete it and "
            "download it again (pin its sha256 so a damaged copy is caught earlier)"
        ) from None


def _not_an_archive(archive: Path) -> CorruptArchiveError:
    return CorruptArchiveError(f"{archive}: not a zip or tar archive (truncated download, or the wrong file?)")


def _check_ratio(archive: Path, what: str, unpacked: int, packed: int) -> None:
    if unpacked > RATIO_FLOOR and unpacked > MAX_RATIO * max(packed, 1):
        raise UnsafeArchiveError(
            f"{archive}: {what} expands {unpacked / max(packed, 1):.0f}x "
            f"(limit {MAX_RATIO}x): looks like a zip bomb; refusing to extract"
        )


def _check_total(archive: Path, total: int, max_total: int) -> None:
    if total > max_total:
        raise UnsafeArchiveError(
            f"{archive}: unpacks to over {max_total} bytes (limit; a zip bomb?); refusing to extract"
        )


def _copy_capped(src, out, limit: int, archive: Path, name: str) -> None:
    """Copy at most `limit` bytes: a header that understates the size cannot write more than it declared."""
    written = 0
    for block in iter(lambda: src.read(COPY_BLOCK), b""):
        written += len(block)
        if written > limit:
            raise UnsafeArchiveError(f"{archive}: member '{name}' is larger than its header says; refusing to extract")
        out.write(block)
    if written != limit:
        raise CorruptArchiveError(f"{archive}: member '{name}' holds {written} bytes, its header says {limit}")


def _extract_zip(archive: Path, dest: Path, selected, max_total: int) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise UnsafeArchiveError(f"{archive}: {len(infos)} members (limit {MAX_MEMBERS}); refusing to extract")
        chosen, total = [], 0
        for info in infos:
            name = _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"{archive}: member '{info.filename}' is a symbolic link; refusing to extract")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchiveError(
                    f"{archive}: member '{info.filename}' is a device, fifo or other special file; refusing to extract"
                )
            if info.flag_bits & 0x1:
                raise CorruptArchiveError(f"{archive}: member '{info.filename}' is encrypted; expected a plain archive")
            _check_ratio(archive, f"member '{info.filename}'", info.file_size, info.compress_size)
            if selected(name):
                chosen.append((name, info))
                total += info.file_size
        _check_total(archive, total, max_total)
        _check_ratio(archive, "the archive", total, archive.stat().st_size)
        for name, info in tqdm(chosen, desc=f"extract {archive.name}", unit="file", mininterval=1.0):
            target = dest / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                _copy_capped(src, out, info.file_size, archive, info.filename)
        return [name for name, _ in chosen]


def _extract_tar(archive: Path, dest: Path, selected, max_total: int) -> list[str]:
    packed = archive.stat().st_size
    with tarfile.open(archive) as tf:
        chosen, total, count = [], 0, 0
        for member in tf:
            count += 1
            if count > MAX_MEMBERS:
                raise UnsafeArchiveError(f"{archive}: over {MAX_MEMBERS} members; refusing to extract")
            name = _check_name(archive, member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(f"{archive}: member '{member.name}' is a link; refusing to extract")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive}: member '{member.name}' is a device, fifo or other special file; refusing to extract"
                )
            if member.isfile() and member.size < 0:
                raise CorruptArchiveError(f"{archive}: member '{member.name}' has a negative size")
            if selected(name):
                chosen.append((name, member))
                total += member.size
                _check_total(archive, total, max_total)
                _check_ratio(archive, "the archive", total, packed)
        for name, member in tqdm(chosen, desc=f"extract {archive.name}", unit="file", mininterval=1.0):
            target = dest / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(member) as src, open(target, "wb") as out:
                _copy_capped(src, out, member.size, archive, member.name)
        _check_tar_end(archive, tf)  # last: the stream is already near its end
        return [name for name, _ in chosen]


def _check_tar_end(archive: Path, tf: tarfile.TarFile) -> None:
    """Only zero padding may follow the last member: tarfile silently stops at a header that does not parse,
    which is what a member whose header understates its size leaves behind."""
    members = tf.getmembers()
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + (-(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE if last.isfile() else 0)
    tf.fileobj.seek(end)
    rest = tf.fileobj.read(TAR_TRAILER_CHECKED)
    if rest.strip(b"\0"):
        raise CorruptArchiveError(
            f"{archive}: data that is not a valid member follows byte {end} (a member header "
            "that understates its size, or a damaged archive)"
        )
