"""The download layer every workload uses.

A source is a URL (https, http, file://) or a local path (`Source` in params.py).
With LESSON5_MIRROR set, `$LESSON5_MIRROR/<basename of the URL>` is used first and
verified against that folder's SHA256SUMS. Network downloads resume a partial
`.part` file over HTTP Range, retry with exponential backoff, show a progress bar
and appear under their final name only once complete and verified.

Checksum policy: only verified files are used, and a mismatch is always an error
that deletes the bad file. A network file is verified against
  1. the checksum pinned in params.yaml (sha256, or md5 where that is all the
     authority gives), else
  2. the sha256 recorded in sources.lock.yaml by its first download (trust on
     first use), else
  3. nothing yet: it is downloaded, trusted, and its sha256 recorded there, so
     every later download is verified against it. LESSON5_REQUIRE_PINNED=1
     refuses this step instead (for those who want every source pinned).
A local path or file:// URL is your own file: used as it is, verified only when pinned.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from stages.common.cli import StageError
from stages.common.environment import repository_root
from stages.common.io import atomic_path
from stages.common.params import Source

MIRROR_ENV = "LESSON5_MIRROR"
REQUIRE_PINNED_ENV = "LESSON5_REQUIRE_PINNED"
SOURCES_LOCK = Path("sources.lock.yaml")
DOWNLOAD_CACHE = Path(".cache/downloads")
CHUNK = 1 << 20
LOCK_HEADER = """\
# The sha256 of each downloaded source that has no checksum on record in params.yaml, recorded by its
# first download (trust on first use) and checked on every later one. Written by the *_download stages,
# one section per workload (each download stage depends on its own section, so a new record reruns only
# that stage). Commit it. To accept a source that really changed, delete its entry and run again.
"""


class DownloadError(StageError):
    pass


class ChecksumError(DownloadError):
    pass


class UnpinnedSourceError(ChecksumError):
    """A network file arrived with no checksum to verify it, and trusting it on first use is refused."""


class _ShortRead(DownloadError):
    pass


RETRYABLE = (OSError, urllib.error.URLError, http.client.HTTPException, _ShortRead)


@dataclass(frozen=True)
class Expected:
    """The checksums a file must match and where they come from (for error messages)."""

    digests: dict[str, str]
    origin: str

    def describe(self) -> str:
        return ", ".join(f"{name} {digest}" for name, digest in self.digests.items())


@dataclass(frozen=True)
class TrustRecord:
    """One workload's section of sources.lock.yaml: {url: {sha256, bytes}} of sources trusted on first use."""

    section: str
    path: Path = SOURCES_LOCK

    def read(self) -> dict[str, dict]:
        return (_read_lock(self.path).get(self.section) or {}) if self.path.is_file() else {}

    def expected(self, url: str) -> Expected | None:
        entry = self.read().get(url)
        if not entry:
            return None
        return Expected(
            {"sha256": entry["sha256"]}, f"recorded in {self.path} (section {self.section}) by its first download"
        )

    def add(self, url: str, sha256: str, size: int) -> None:
        """Record a trusted download; several download stages may do this at once, hence the file lock."""
        from filelock import FileLock

        lock_file = self.path.parent / ".cache" / f"{self.path.name}.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_file)):
            data = _read_lock(self.path) if self.path.is_file() else {}
            data.setdefault(self.section, {})[url] = {"sha256": sha256, "bytes": size}
            with atomic_path(self.path) as tmp:
                tmp.write_text(LOCK_HEADER + yaml.safe_dump(data, sort_keys=True, default_flow_style=False))


def _read_lock(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DownloadError(f"{path}: not valid YAML ({err}); restore it from git") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{path}: expected a mapping of workload sections; restore it from git")
    return data


def digests(path: str | os.PathLike, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """{algorithm: hex digest} of a file, every algorithm in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for hasher in hashers.values():
                hasher.update(block)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def sha256_file(path: str | os.PathLike) -> str:
    return digests(path)["sha256"]


def mirror_checksums(mirror: Path) -> dict[str, str]:
    sums = mirror / "SHA256SUMS"
    if not sums.is_file():
        raise DownloadError(
            f"mirror {mirror} has no SHA256SUMS file: every mirrored file must be listed there "
            "as '<sha256>  <name>' (the output of `sha256sum *`)"
        )
    table = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[parts[1].lstrip("*")] = parts[0].lower()
    return table


def fetch(
    source: Source,
    dest: str | os.PathLike,
    *,
    record: TrustRecord | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    mirror: str | os.PathLike | None = None,
) -> Path:
    """Place the verified file for `source` at `dest`; return `dest`.

    Order: the mirror (if configured and it holds the file), then the URL. A `dest` that already holds the
    expected bytes is kept as it is. `record`: where a network source without a pinned checksum is trusted on
    first use; without it such a source is refused.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:  # relative to the repository, also from an experiment's copy of it (dvc exp run --temp, dvc queue)
        mirror = os.path.normpath(repository_root() / mirror)
    tried: list[str] = []

    if mirror:
        mirror_file = Path(mirror) / source.filename
        if mirror_file.is_file():
            listed = mirror_checksums(Path(mirror)).get(source.filename)
            if listed is None:
                raise ChecksumError(
                    f"{mirror_file} is not listed in {Path(mirror) / 'SHA256SUMS'}: "
                    "add its sha256 there (unlisted files are never used)"
                )
            expected = Expected({"sha256": listed}, f"listed in {Path(mirror) / 'SHA256SUMS'}")
            if not _holds(dest, expected):
                _copy_verified(mirror_file, dest, expected)
            return dest
        where = "no such file" if Path(mirror).is_dir() else "the mirror folder does not exist"
        tried.append(f"mirror file {mirror_file} ({where})")

    expected = _expected(source, record)
    if expected and _holds(dest, expected):
        return dest
    tried.append(f"URL {source.url}")
    try:
        _download(source, dest, expected, record, retries=retries, backoff=backoff, timeout=timeout)
    except ChecksumError:
        raise
    except (*RETRYABLE, DownloadError) as err:
        hint = (
            f"set {MIRROR_ENV} to a folder holding {source.filename} and a SHA256SUMS file listing it "
            "(e.g. LESSON5_MIRROR=../shared/data), or check the URL and your network/proxy"
        )
        raise DownloadError(
            f"could not get {source.filename}: {err}\n  tried: " + "; ".join(tried) + f"\n  fix: {hint}"
        ) from err
    return dest


def _expected(source: Source, record: TrustRecord | None) -> Expected | None:
    if source.pinned:
        return Expected(source.pinned, "pinned in params.yaml")
    return record.expected(source.url) if record else None


def _holds(path: Path, expected: Expected) -> bool:
    return path.is_file() and digests(path, expected.digests) == expected.digests


def _copy_verified(src: Path, dest: Path, expected: Expected | None) -> None:
    part = dest.with_name(dest.name + ".part")
    with open(src, "rb") as fin, open(part, "wb") as fout, _bar(src.stat().st_size, f"copy {src.name}") as bar:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.update(len(block))
    actual = _verify(part, expected, source=str(src))
    if not expected:
        tqdm.write(
            f"note: local file {src} has no pinned checksum (its sha256 is {actual}); pin it in params.yaml "
            "to detect changes"
        )
    os.replace(part, dest)


def _download(
    source: Source,
    dest: Path,
    expected: Expected | None,
    record: TrustRecord | None,
    *,
    retries: int,
    backoff: float,
    timeout: float,
) -> None:
    parsed = urllib.parse.urlparse(source.url)
    if parsed.scheme in ("", "file"):
        local = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else source.url)
        if not local.is_file():
            raise DownloadError(f"no such file: {local}")
        _copy_verified(local, dest, expected)
        return
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(
            f"unsupported URL scheme '{parsed.scheme}' in {source.url} (use https, http, file:// or a path)"
        )

    part = dest.with_name(dest.name + ".part")
    resumed = part.exists()
    _download_with_retries(source.url, part, retries, backoff, timeout)
    try:
        actual = _verify(part, expected, source=source.url)
    except ChecksumError:
        if not resumed:
            raise
        # the old .part may come from another version of the file: one clean download decides
        tqdm.write(f"resumed download of {source.url} does not verify; downloading it again from the start")
        _download_with_retries(source.url, part, retries, backoff, timeout)
        actual = _verify(part, expected, source=source.url)
    if expected is None:
        _trust_on_first_use(source, part, actual, record)
    os.replace(part, dest)


def _trust_on_first_use(source: Source, part: Path, sha256: str, record: TrustRecord | None) -> None:
    if record is None or os.environ.get(REQUIRE_PINNED_ENV) == "1":
        why = (
            f"{REQUIRE_PINNED_ENV}=1 asks for every source to be pinned"
            if record is not None
            else "this download has no record to trust it in"
        )
        raise UnpinnedSourceError(
            f"refusing to use {source.url}: it has no checksum on record and {why}.\n"
            f"  The downloaded file has sha256 {sha256} (kept as {part}, not used).\n"
            f"  fix: if you trust this source, pin it in params.yaml next to its url:  sha256: {sha256}\n"
            f"       then re-run (the kept file is reused); or use a verified mirror ({MIRROR_ENV}=<folder with "
            "SHA256SUMS>)."
        )
    size = part.stat().st_size
    record.add(source.url, sha256, size)
    tqdm.write(
        f"trusted on first use: {source.url} ({size:,} bytes, sha256 {sha256}) recorded in {record.path}; "
        "later downloads must match it. Commit that file, or pin the sha256 in params.yaml."
    )


def _download_with_retries(url: str, part: Path, retries: int, backoff: float, timeout: float) -> None:
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout)
            return
        except RETRYABLE as err:
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429):
                raise  # a missing file does not appear by retrying
            if attempt == retries:
                raise
            delay = backoff * 2**attempt
            tqdm.write(
                f"download of {url} failed ({err}); retry {attempt + 1}/{retries} in {delay:.1f}s"
                + (f", resuming at byte {part.stat().st_size}" if part.exists() else "")
            )
            time.sleep(delay)


def _download_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lesson5"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete (the checksum decides)
            return
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        # resume only when the server sends exactly the bytes we asked for; otherwise start over
        resumed = response.status == 206 and content_range.startswith(f"bytes {have}-")
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as out, _bar(total, part.name[:-5], initial=have) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise _ShortRead(f"connection closed after {part.stat().st_size} of {total} bytes")


def _verify(part: Path, expected: Expected | None, source: str) -> str:
    """The file's sha256; a mismatch with `expected` deletes it and raises, naming both hashes."""
    actual = digests(part, {"sha256", *(expected.digests if expected else ())})
    if expected and any(actual[name] != digest for name, digest in expected.digests.items()):
        part.unlink()
        got = ", ".join(f"{name} {actual[name]}" for name in expected.digests)
        raise ChecksumError(
            f"checksum mismatch for {source}: expected {expected.describe()} ({expected.origin}), "
            f"got {got}. The file is truncated, tampered with or another version, and was deleted; "
            "nothing downstream was written. Download it again; if the source really changed, "
            "update the checksum where it is kept (named above)."
        )
    return actual["sha256"]


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, mininterval=1.0)


def fetch_and_extract(
    source: Source, out_dir: str | os.PathLike, record: TrustRecord, members: list[str] | None = None
) -> Path:
    """Fetch `source` into the download cache (kept for resume and reuse) and extract it into `out_dir`."""
    from stages.common.archive import extract

    archive = DOWNLOAD_CACHE / source.filename
    fetch(source, archive, record=record)
    return extract(archive, out_dir, members=members)
