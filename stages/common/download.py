"""The download layer every workload uses.

A source is a URL (https, http, file://) or a local path, with an optional pinned
sha256. With LESSON5_MIRROR set, `$LESSON5_MIRROR/<basename of the URL>` is used
first and verified against that folder's SHA256SUMS. Network downloads resume a
partial `.part` file, retry with backoff, show a progress bar and appear under
their final name only once complete and verified.
"""
from __future__ import annotations

import hashlib
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
CHUNK = 1 << 20


class Source(Schema):
    url: str = Field(min_length=1)
    sha256: str | None = Field(default=None, description="pinned checksum; null: print it and trust this download")

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

    Order: the mirror (if configured and it holds the file), then the URL.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    tried: list[str] = []

    if mirror:
        mirror_file = Path(mirror) / source.filename
        tried.append(f"mirror file {mirror_file}")
        if mirror_file.is_file():
            expected = mirror_checksums(Path(mirror)).get(source.filename)
            if expected is None:
                raise ChecksumError(f"{mirror_file} is not listed in {Path(mirror) / 'SHA256SUMS'}: "
                                    "add its sha256 there (unlisted files are never used)")
            _copy_verified(mirror_file, dest, expected)
            return dest

    tried.append(f"URL {source.url}")
    try:
        _download(source, dest, retries=retries, backoff=backoff, timeout=timeout)
    except ChecksumError:
        raise
    except (OSError, urllib.error.URLError, DownloadError) as err:
        hint = (f"set {MIRROR_ENV} to a folder holding {source.filename} and a SHA256SUMS file listing it "
                "(e.g. LESSON5_MIRROR=../shared/data), or check your network/proxy")
        raise DownloadError(f"could not get {source.filename}: {err}\n  tried: " + "; ".join(tried)
                            + f"\n  fix: {hint}") from err
    return dest


def _copy_verified(src: Path, dest: Path, expected: str) -> None:
    part = dest.with_name(dest.name + ".part")
    with open(src, "rb") as fin, open(part, "wb") as fout, _bar(src.stat().st_size, f"copy {src.name}") as bar:
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.update(len(block))
    _finish(part, dest, expected, origin=str(src))


def _download(source: Source, dest: Path, *, retries: int, backoff: float, timeout: float) -> None:
    parsed = urllib.parse.urlparse(source.url)
    if parsed.scheme in ("", "file"):
        local = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else source.url)
        if not local.is_file():
            raise DownloadError(f"no such file: {local}")
        _copy_verified(local, dest, source.sha256 or "")
        return
    if parsed.scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme '{parsed.scheme}' in {source.url} (use https, http, file:// or a path)")

    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _download_once(source.url, part, timeout)
            break
        except (OSError, urllib.error.URLError) as err:
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429):
                raise  # a missing file does not appear by retrying
            if attempt == retries:
                raise
            delay = backoff * 2 ** attempt
            tqdm.write(f"download of {source.url} failed ({err}); retry {attempt + 1}/{retries} in {delay:.0f}s")
            time.sleep(delay)
    _finish(part, dest, source.sha256 or "", origin=source.url)


def _download_once(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lesson5"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already complete
            return
        raise
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as out, _bar(total, Path(part).name[:-5], initial=have) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _finish(part: Path, dest: Path, expected: str, origin: str) -> None:
    actual = sha256_file(part)
    if expected and actual != expected:
        part.unlink()
        raise ChecksumError(f"checksum mismatch for {origin}: expected sha256 {expected}, got {actual}. "
                            "The file is truncated or tampered with and was deleted; nothing downstream was written. "
                            "Download it again, or fix the pinned sha256 if the source really changed.")
    if not expected:
        tqdm.write(f"WARNING: {origin} has no pinned sha256; got {actual}. Pin it in params.yaml to verify future downloads.")
    os.replace(part, dest)


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                mininterval=1.0, disable=None)




DOWNLOAD_CACHE = Path(".cache/downloads")


def fetch_and_extract(source: Source, out_dir: str | os.PathLike, members: list[str] | None = None) -> Path:
    """Fetch `source` into the download cache (kept for resume and reuse) and extract it into `out_dir`."""
    from stages.common.archive import extract

    archive = DOWNLOAD_CACHE / source.filename
    fetch(source, archive)
    return extract(archive, out_dir, members=members)
