"""Archive extraction refuses every unsafe or damaged archive before anything appears in the target folder:
path traversal, absolute paths, symlinks, hard links, devices, fifos, zip bombs, lying headers, truncation."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from stages.common import archive as archive_mod
from stages.common.archive import CorruptArchiveError, UnsafeArchiveError, extract, read_members
from stages.common.download import ChecksumError, TrustRecord, fetch_and_extract
from stages.common.params import Source
from tests.factories.movielens import movielens_zip


def make_zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            zf.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.devmajor, info.devminor = kind, linkname, 1, 3
    return info


def assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/lesson5-evil.txt").exists()


def test_zip_and_tar_extract_with_member_selection(tmp_path):
    files = {"top/a.txt": b"alpha", "top/sub/b.txt": b"beta", "other/c.txt": b"gamma"}
    for archive in (make_zip(tmp_path / "x.zip", files), make_tar(tmp_path / "x.tar.gz", list(files.items()))):
        dest = tmp_path / f"out-{archive.name}"
        extract(archive, dest, members=["top"])
        assert (dest / "top/sub/b.txt").read_bytes() == b"beta"
        assert not (dest / "other").exists()


@pytest.mark.parametrize(
    "name, match",
    [
        ("../evil.txt", "path traversal"),
        ("safe/../../evil.txt", "path traversal"),
        ("..\\evil.txt", "path traversal"),
        ("/tmp/lesson5-evil.txt", "absolute path"),
        ("C:/evil.txt", "absolute path"),
    ],
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_names_that_escape_the_target_are_refused(tmp_path, name, match, kind):
    files = {"ok.txt": b"fine", name: b"owned"}
    archive = (
        make_zip(tmp_path / "a.zip", files) if kind == "zip" else make_tar(tmp_path / "a.tar.gz", list(files.items()))
    )
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match=match):
        extract(archive, dest, members=["ok.txt"])  # an unsafe member is refused even when not selected
    assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize(
    "member, match",
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
        (special("hard", tarfile.LNKTYPE, "ok.txt"), "is a link"),
        (special("dev", tarfile.CHRTYPE), "device, fifo"),
        (special("disk", tarfile.BLKTYPE), "device, fifo"),
        (special("pipe", tarfile.FIFOTYPE), "device, fifo"),
    ],
)
def test_tar_links_devices_and_fifos_are_refused(tmp_path, member, match):
    archive = make_tar(tmp_path / "a.tar", [("ok.txt", b"fine"), member], mode="w")
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match=match):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize(
    "mode, match",
    [
        (stat.S_IFLNK | 0o777, "symbolic link"),
        (stat.S_IFCHR | 0o644, "device, fifo"),
        (stat.S_IFIFO | 0o644, "device, fifo"),
    ],
)
def test_zip_symlinks_and_special_files_are_refused(tmp_path, mode, match):
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "odd": b"/etc/passwd"}, modes={"odd": mode})
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match=match):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


def _zeros_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.bin", "w") as out:
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            out.write(block)
    return path


def test_zip_bomb_by_compression_ratio_is_refused(tmp_path):
    archive = _zeros_zip(tmp_path / "bomb.zip", 64 << 20)  # 64 MiB of zeros in ~64 KiB
    assert archive.stat().st_size < 1 << 20
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="looks like a zip bomb"):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


def test_tar_bomb_by_compression_ratio_is_refused(tmp_path):
    info = tarfile.TarInfo("zeros.bin")
    info.size = 64 << 20
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="looks like a zip bomb"):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_total_unpacked_size_over_the_limit_is_refused(tmp_path, kind):
    files = {f"f{i}.txt": bytes(range(256)) * 8 for i in range(4)}  # 8 KiB, barely compressible
    archive = (
        make_zip(tmp_path / "a.zip", files) if kind == "zip" else make_tar(tmp_path / "a.tar.gz", list(files.items()))
    )
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="over the .*limit|over 5000 bytes"):
        extract(archive, dest, max_total_bytes=5000)
    assert_nothing_extracted(tmp_path, dest)


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_MEMBERS", 10)
    archive = make_zip(tmp_path / "a.zip", {f"{i}.txt": b"" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="11 members"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _patch_zip_size(blob: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size in both the local and the central header of a one-member zip."""
    data = bytearray(blob)
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, size)
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


@pytest.mark.parametrize("declared", [100, 1_000_000])
def test_zip_header_lying_about_the_size_is_refused(tmp_path, declared):
    content = bytes(range(256)) * 40  # 10,240 bytes
    blob = make_zip(tmp_path / "honest.zip", {"a.bin": content}).read_bytes()
    archive = tmp_path / "liar.zip"
    archive.write_bytes(_patch_zip_size(blob, declared))
    assert zipfile.ZipFile(archive).getinfo("a.bin").file_size == declared
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="damaged archive|larger than its header|holds"):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


def _patch_tar_size(blob: bytes, size: int) -> bytes:
    """Rewrite the first header's size field (and its checksum) in an uncompressed tar."""
    header = bytearray(blob[:512])
    header[124:136] = f"{size:011o}\0".encode()
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header) + blob[512:]


@pytest.mark.parametrize("declared", [100, 50_000])
def test_tar_header_lying_about_the_size_is_refused(tmp_path, declared):
    blob = make_tar(
        tmp_path / "honest.tar", [("a.bin", bytes(range(256)) * 8), ("b.txt", b"next member")], mode="w"
    ).read_bytes()
    archive = tmp_path / "liar.tar"
    archive.write_bytes(_patch_tar_size(blob, declared))
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(CorruptArchiveError):
        extract(archive, dest)
    assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_truncated_archive_is_a_clear_error_and_writes_nothing(tmp_path, kind):
    files = {f"d/{i}.txt": bytes(range(256)) * 20 for i in range(5)}
    archive = (
        make_zip(tmp_path / "a.zip", files)
        if kind == "zip"
        else make_tar(tmp_path / f"a.{kind}", list(files.items()), mode="w:gz" if kind == "tar.gz" else "w")
    )
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(CorruptArchiveError, match="not a zip or tar|damaged archive|unexpected end"):
        extract(cut, dest)
    assert_nothing_extracted(tmp_path, dest)


def test_read_members_reads_selected_regular_files_in_place_and_never_a_link(tmp_path):
    files = [
        ("d/a.txt", b"alpha"),
        ("d/b.txt", b"beta"),
        ("e/c.txt", b"gamma"),
        special("d/link.txt", tarfile.SYMTYPE, "/etc/passwd"),
        special("d/hard.txt", tarfile.LNKTYPE, "d/a.txt"),
    ]
    pick = lambda name: name.startswith("d/")  # noqa: E731
    assert list(read_members(make_tar(tmp_path / "a.tar.gz", files), pick)) == [
        ("d/a.txt", b"alpha"),
        ("d/b.txt", b"beta"),
    ]
    archive = make_zip(
        tmp_path / "a.zip",
        {"d/a.txt": b"alpha", "d/odd": b"/etc/passwd", "e/c.txt": b"gamma"},
        modes={"d/odd": stat.S_IFLNK | 0o777},
    )
    assert list(read_members(archive, pick)) == [("d/a.txt", b"alpha")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "a.zip"]  # nothing written


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("bomb", UnsafeArchiveError, "looks like a zip bomb"),
        ("over the limit", UnsafeArchiveError, "over 5000 bytes"),
        ("traversal", UnsafeArchiveError, "path traversal"),
        ("truncated", CorruptArchiveError, "damaged archive"),
        ("not an archive", CorruptArchiveError, "not a zip or tar archive"),
    ],
)
def test_read_members_refuses_what_extract_refuses(tmp_path, case, error, match):
    archive = tmp_path / "a.tar.gz"
    if case == "bomb":
        archive = _zeros_zip(tmp_path / "bomb.zip", 64 << 20)
    elif case == "traversal":
        make_tar(archive, [("ok.txt", b"fine"), ("../evil.txt", b"owned")])
    elif case == "truncated":
        blob = make_tar(archive, [(f"d/{i}.txt", bytes(range(256)) * 20) for i in range(5)]).read_bytes()
        archive.write_bytes(blob[: len(blob) * 2 // 3])
    elif case == "not an archive":
        archive.write_bytes(b"<html>proxy login page</html>")
    else:
        make_tar(archive, [(f"f{i}.txt", bytes(range(256)) * 8) for i in range(4)])
    with pytest.raises(error, match=match):
        list(read_members(archive, lambda name: True, max_total_bytes=5000 if case == "over the limit" else 10**9))


def test_failed_extraction_keeps_the_previous_output(tmp_path):
    dest = tmp_path / "out"
    extract(make_zip(tmp_path / "good.zip", {"a.txt": b"version 1"}), dest)
    with pytest.raises(UnsafeArchiveError):
        extract(make_zip(tmp_path / "bad.zip", {"a.txt": b"version 2", "../evil.txt": b"x"}), dest)
    assert (dest / "a.txt").read_bytes() == b"version 1"


def test_missing_expected_member_is_a_clear_error(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ml-1m/ratings.dat": b"1::1::5::0\n"})
    with pytest.raises(CorruptArchiveError, match="has no member 'ml-latest-small/ratings.csv'"):
        extract(archive, tmp_path / "out", members=["ml-latest-small/ratings.csv"])
    assert not (tmp_path / "out").exists()


def test_tampered_archive_fails_its_checksum_before_extraction(http_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the download cache is relative to the project root
    blob = movielens_zip()
    _, sha = http_server.add("ml-latest-small.zip", blob)
    http_server.add("ml-latest-small.zip", blob[:-200] + bytes(200))  # the served copy is damaged
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch_and_extract(Source(url=http_server.url("ml-latest-small.zip"), sha256=sha), raw, TrustRecord("movielens"))
    assert not raw.exists() and list((tmp_path / ".cache" / "downloads").iterdir()) == []


@pytest.mark.slow
def test_truncated_download_stops_the_real_pipeline_before_any_output(project, http_server):
    """`dvc repro` of the MovieLens chain with a truncated archive: a checksum error, no stage output at all."""
    blob = movielens_zip()
    _, sha = http_server.add("ml-latest-small.zip", blob)
    http_server.add("ml-latest-small.zip", blob[: len(blob) // 2])
    project.set_params(
        {"movielens.sources.ml-latest-small": {"url": http_server.url("ml-latest-small.zip"), "sha256": sha}}
    )
    result = project.dvc("repro", "movielens_prepare", check=False)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr + result.stdout
    assert not (project.root / "data" / "movielens" / "raw").exists()
    assert not (project.root / "data" / "movielens" / "prepared").exists()
    assert not (project.root / "dvc.lock").exists()


def test_a_member_with_an_empty_name_is_a_damaged_archive(tmp_path):
    """Found by tests/test_fuzz.py: a central directory entry whose name is empty made zipfile itself fail
    (IndexError in ZipInfo.is_dir) instead of a clear error."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "hello")
    data = bytearray(buf.getvalue())
    entry = data.index(b"PK\x01\x02")  # the central directory entry: its name's length at +28, the name at +46
    (name_length,) = struct.unpack_from("<H", data, entry + 28)
    struct.pack_into("<H", data, entry + 28, 0)
    del data[entry + 46 : entry + 46 + name_length]
    end = data.index(b"PK\x05\x06")  # the directory's size at +12 shrinks by the name
    struct.pack_into("<I", data, end + 12, struct.unpack_from("<I", data, end + 12)[0] - name_length)
    archive = tmp_path / "empty-name.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match="a member has an empty name"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
