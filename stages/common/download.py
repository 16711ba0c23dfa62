"""The download layer every workload uses.

A source is a URL (https, http, file://) or a local path, with a pinned sha256.
With LESSON5_MIRROR set, `$LESSON5_MIRROR/<basename of the URL>` is used first and
verified against that folder's SHA256SUMS. Network downloads resume a partial
`.part` file over HTTP Range, retry with exponential backoff, show a progress bar
and appear under their final name only once complete and verified.

Checksum policy: only verified files are used. A network source needs a pinned
sha256 (or the mirror's SHA256SUMS entry); an unpinned one is downloaded, its
sha256 printed for you to pin, and refused unless LESSON5_ALLOW_UNPINNED=1.
A local path or file:// URL without a pin is your own file: used, with its
sha256 printed. A mismatch is always an error and the bad file is deleted.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pydantic import Field, field_validator
from tqdm.auto import tqdm

from stages.common.params import Schema

MIRROR_ENV = "LESSON5_MIRROR"
ALLOW_UNPINNED_ENV = "LESSON5_ALLOW_UNPINNED"
CHUNK = 1 << 20


class Source(Schema):
    url: str = Field(min_length=1)
    sha256: str | None = Field(default=None, description="pinned checksum; null: only the offline mirror or a "
                                                         "local file can serve it (a download prints the hash to pin)")

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # params.yaml is committed and logged to MLflow: secrets belong in the environment or ~/.netrc
        if urllib.parse.urlparse(value).password is not None:
            raise ValueError("must not contain a password (user:password@host): params are committed and logged; "
                             "use ~/.netrc or the environment for credentials")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower())):
            raise ValueError("must be 64 hex digits (a sha256) or null")
        return value.lower() if value else value

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name or "download"


class DownloadError(RuntimeError):
    pass


class ChecksumError(DownloadError):
    pass


class UnpinnedSourceError(ChecksumError):
    """A network file arrived but no sha256 was pinned to verify it."""


class _ShortRead(DownloadError):
    pass


RETRYABLE = (OSError, urllib.error.URLError, http.client.HTTPException, _ShortRead)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def mirror_checksums(mirror: Path) -> dict[str, str]:
    sums = mirror / "SHA256SUMS"
    if not sums.is_file():
        raise DownloadError(f"mirror {mirror} has no SHA256SUMS file: every mirrored file must be listed there "
                            "as '<sha256>  <name>' (the output of `sha256sum *`)")
    table = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            table[parts[1].lstrip("*")] = parts[0].lower()
    return table


def fetch(source: Source, dest: str | os.PathLike, *, retries: int = 4, backoff: float = 1.0,
          timeout: float = 60.0, mirror: str | os.PathLike | None = None) -> Path:
    """Place the verified file for `source` at `dest`; return `dest`.

    Order: the mirror (if configured and it holds the file), then the URL. A `dest`
    that already holds the expected bytes is kept as it is.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    tried: list[str] = []

    if mirror:
        mirror_file = Path(mirror) / source.filename
        if mirror_file.is_file():
            expected = mirror_checksums(Path(mirror)).get(source.filename)
            if expected is None:
                raise ChecksumError(f"{mirror_file} is not listed in {Path(mirror) / 'SHA256SUMS'}: "
                                    "add its sha256 there (unlisted files are never used)")
            if not _holds(dest, expected):
                _copy_verified(mirror_file, dest, expected)
            return dest
        where = "no such file" if Path(mirror).is_dir() else "the mirror folder does not exist"
        tried.append(f"mirror file {mirror_file} ({where})")

    if source.sha256 and _holds(dest, source.sha256):
        return dest
    tried.append(f"URL {source.url}")
    try:
        _download(source, dest, retries=retries, backoff=backoff, timeout=timeout)
    except ChecksumError:
        raise
    except (*RETRYABLE, DownloadError) as err:
        hint = (f"set {MIRROR_ENV} to a folder holding {source.filename} and a SHA256SUMS file listing it "
                "(e.g. LESSON5_MIRROR=../shared/data), or check the URL and your network/proxy")
        raise DownloadError(f"could not get {source.filename}: {err}\n  tried: " + "; ".join(tried)
                            + f"\n  fix: {hint}") from err
    return dest


def _holds(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def _copy_verified(src: Path, dest: Path, expected: str | None) -> None:
    part = dest.with_name(dest.name + ".part")
    with open(src, "rb") as fin, open(part, "wb") as fout, _bar(src.stat().st_size, f"copy {src.name}") as bar:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.update(len(block))
    actual = _verify(part, expected, origin=str(src))
    if not expected:
        tqdm.write(f"note: local file {src} has no pinned sha256 (it is {actual}); pin it to detect changes")
    os.replace(part, dest)


def _download(source: Source, dest: Path, *, retries: int, backoff: float, timeout: float) -> None:
    parsed = urllib.parse.urlparse(source.url)
    if parsed.scheme in ("", "file"):
        local = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else source.url)
        if not local.is_file():
            raise DownloadError(f"no such file: {local}")
        _copy_verified(local, dest, source.sha256)
        return
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme '{parsed.scheme}' in {source.url} (use https, http, file:// or a path)")

    part = dest.with_name(dest.name + ".part")
    resumed = part.exists()
    _download_with_retries(source.url, part, retries, backoff, timeout)
    try:
        actual = _verify(part, source.sha256, origin=source.url)
    except ChecksumError:
        if not resumed:
            raise
        # the old .part may come from another version of the file: one clean download decides
        tqdm.write(f"resumed download of {source.url} does not verify; downloading it again from the start")
        _download_with_retries(source.url, part, retries, backoff, timeout)
        actual = _verify(part, source.sha256, origin=source.url)
    if not source.sha256:
        if os.environ.get(ALLOW_UNPINNED_ENV) != "1":
            raise UnpinnedSourceError(
                f"refusing to use {source.url}: it has no pinned sha256 (only checksum-verified downloads are used).\n"
                f"  The downloaded file has sha256 {actual} (kept as {part}, not used).\n"
                f"  fix: if you trust this source, pin it in params.yaml next to its url:  sha256: {actual}\n"
                f"       then re-run (the kept file is reused); or use a verified mirror ({MIRROR_ENV}=<folder with "
                f"SHA256SUMS>); or set {ALLOW_UNPINNED_ENV}=1 to trust this one download unverified.")
        tqdm.write(f"WARNING: {ALLOW_UNPINNED_ENV}=1: using {source.url} unverified (sha256 {actual}); pin it.")
    os.replace(part, dest)


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
            delay = backoff * 2 ** attempt
            tqdm.write(f"download of {url} failed ({err}); retry {attempt + 1}/{retries} in {delay:.1f}s"
                       + (f", resuming at byte {part.stat().st_size}" if part.exists() else ""))
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


def _verify(part: Path, expected: str | None, origin: str) -> str:
    """The file's sha256; a mismatch deletes it and raises."""
    actual = sha256_file(part)
    if expected and actual != expected:
        part.unlink()
        raise ChecksumError(f"checksum mismatch for {origin}: expected sha256 {expected}, got {actual}. "
                            "The file is truncated or tampered with and was deleted; nothing downstream was written. "
                            "Download it again, or fix the pinned sha256 if the source really changed.")
    return actual


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                mininterval=1.0)


DOWNLOAD_CACHE = Path(".cache/downloads")


def fetch_and_extract(source: Source, out_dir: str | os.PathLike, members: list[str] | None = None) -> Path:
    """Fetch `source` into the download cache (kept for resume and reuse) and extract it into `out_dir`."""
    from stages.common.archive import extract

    archive = DOWNLOAD_CACHE / source.filename
    fetch(source, archive)
    return extract(archive, out_dir, members=members)
