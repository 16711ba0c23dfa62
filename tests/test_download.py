"""The download layer against real servers and files: every source kind, checksums, the mirror, retries,
resume over HTTP Range, a SIGKILLed download, trust on first use (and its strict refusal), md5 pins and the
unreachable-URL message."""

from __future__ import annotations

import datetime
import functools
import hashlib
import http.server
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.server import free_port
from stages.common.download import ChecksumError, DownloadError, TrustRecord, UnpinnedSourceError, fetch, sha256_file
from stages.common.params import Source
from tests.conftest import REPO, RangeHandler

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FaultyHandler(RangeHandler):
    """The fixture's handler, recording each request's Range header, failing the first `fail_first` requests
    with 503 and, with `throttle` set, sending 64 KiB every `throttle` seconds (to kill a download mid-way)."""

    def do_GET(self):
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        if server.fail_first > 0:
            server.fail_first -= 1
            self.send_error(503)
            return
        if not server.throttle:
            super().do_GET()
            return
        data = Path(self.translate_path(self.path)).read_bytes()
        start = int((self.headers.get("Range") or "bytes=0-")[6:].split("-")[0])
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        for i in range(start, len(data), 1 << 16):
            self.wfile.write(data[i : i + (1 << 16)])
            time.sleep(server.throttle)


@pytest.fixture
def server(http_server):
    """http_server with request recording and fault injection."""
    httpd = http_server.httpd
    httpd.ranges, httpd.fail_first, httpd.throttle = [], 0, 0.0
    httpd.RequestHandlerClass = functools.partial(FaultyHandler, directory=str(http_server.root))
    return http_server


def test_http_source_is_verified_and_placed_atomically(server, tmp_path):
    url, sha = server.add("data.bin", PAYLOAD)
    dest = fetch(Source(url=url, sha256=sha), tmp_path / "out" / "data.bin")
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]  # no .part left behind


def test_a_verified_file_already_in_place_is_not_downloaded_again(server, tmp_path):
    url, sha = server.add("data.bin", PAYLOAD)
    fetch(Source(url=url, sha256=sha), tmp_path / "data.bin")
    fetch(Source(url=url, sha256=sha), tmp_path / "data.bin")
    assert len(server.httpd.ranges) == 1


def _self_signed_cert(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_https_source_verifies_the_server_certificate_and_the_checksum(tmp_path, monkeypatch):
    www = tmp_path / "www"
    www.mkdir()
    (www / "data.bin").write_bytes(PAYLOAD)
    cert, key = _self_signed_cert(tmp_path)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(www)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    source = Source(url=f"https://127.0.0.1:{httpd.server_address[1]}/data.bin", sha256=SHA)
    try:
        with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):  # an untrusted server is refused
            fetch(source, tmp_path / "untrusted.bin", retries=0)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the certificate is trusted
        # Python 3.12+ makes urlopen's opener, and its TLS context, once per process (a stage reads
        # SSL_CERT_FILE at its start): a new one reads the variable
        urllib.request.install_opener(None)
        assert fetch(source, tmp_path / "data.bin").read_bytes() == PAYLOAD
    finally:
        urllib.request.install_opener(None)  # the next urlopen trusts the usual certificates again
        httpd.shutdown()
        httpd.server_close()


def test_file_url_and_local_path_sources(tmp_path, capsys):
    src = tmp_path / "src" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    assert fetch(Source(url=src.as_uri(), sha256=SHA), tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert fetch(Source(url=str(src), sha256=SHA), tmp_path / "b.bin").read_bytes() == PAYLOAD
    # a local file without a pin is the user's own file: used, and its hash printed for pinning
    assert fetch(Source(url=str(src)), tmp_path / "c.bin").read_bytes() == PAYLOAD
    assert SHA in capsys.readouterr().out
    with pytest.raises(DownloadError, match="no such file"):
        fetch(Source(url=str(tmp_path / "missing.zip"), sha256=SHA), tmp_path / "d.bin")


@pytest.mark.parametrize("kind", ["http", "file"])
def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path, kind):
    tampered = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])
    if kind == "http":
        url, _ = server.add("data.bin", tampered)
    else:
        (tmp_path / "data.bin").write_bytes(tampered)
        url = (tmp_path / "data.bin").as_uri()
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=f"expected sha256 {SHA}"):
        fetch(Source(url=url, sha256=SHA), out / "data.bin")
    assert list(out.iterdir()) == []  # neither the file nor a .part


def _mirror(folder: Path, files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> Path:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    listed = files if listed is None else listed
    (folder / "SHA256SUMS").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in listed.items()))
    return folder


def test_mirror_is_used_first_and_verified_by_its_sha256sums(tmp_path, monkeypatch):
    mirror = _mirror(tmp_path / "mirror", {"data.bin": PAYLOAD})
    monkeypatch.setenv("LESSON5_MIRROR", str(mirror))
    # the URL cannot be reached and nothing is pinned: the mirror's SHA256SUMS is the pin
    source = Source(url=f"http://127.0.0.1:{free_port()}/some/path/data.bin")
    assert fetch(source, tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_mirror_file_not_listed_in_sha256sums_is_refused(tmp_path):
    mirror = _mirror(tmp_path / "mirror", {"data.bin": PAYLOAD}, listed={"other.bin": b"x"})
    with pytest.raises(ChecksumError, match="not listed in .*SHA256SUMS"):
        fetch(Source(url="https://example.org/data.bin"), tmp_path / "data.bin", mirror=mirror)
    assert not (tmp_path / "data.bin").exists()


def test_tampered_mirror_file_is_refused(tmp_path):
    mirror = _mirror(tmp_path / "mirror", {"data.bin": PAYLOAD + b"!"}, listed={"data.bin": PAYLOAD})
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch(Source(url="https://example.org/data.bin"), tmp_path / "out" / "data.bin", mirror=mirror)
    assert list((tmp_path / "out").iterdir()) == []


def test_mirror_without_sha256sums_is_refused(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "data.bin").write_bytes(PAYLOAD)
    with pytest.raises(DownloadError, match="no SHA256SUMS"):
        fetch(Source(url="https://example.org/data.bin", sha256=SHA), tmp_path / "data.bin", mirror=tmp_path / "mirror")


def test_server_errors_are_retried_with_exponential_backoff(server, tmp_path, capsys):
    url, sha = server.add("data.bin", PAYLOAD)
    server.httpd.fail_first = 2
    started = time.monotonic()
    fetch(Source(url=url, sha256=sha), tmp_path / "data.bin", backoff=0.3)
    assert time.monotonic() - started >= 0.3 + 0.6  # waited backoff, then 2x backoff
    assert len(server.httpd.ranges) == 3
    out = capsys.readouterr().out
    assert "retry 1/4 in 0.3s" in out and "retry 2/4 in 0.6s" in out
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(Source(url=server.url("nothing.bin"), sha256=SHA), tmp_path / "x.bin", backoff=5)
    assert len(server.httpd.ranges) == 1


def test_cut_transfer_resumes_with_an_http_range_request(server, tmp_path):
    url, sha = server.add("data.bin", PAYLOAD)
    server.fail_once_after("data.bin", 100_000)
    fetch(Source(url=url, sha256=sha), tmp_path / "data.bin", backoff=0.01)
    assert server.httpd.ranges == [None, "bytes=100000-"]  # the second request asked only for the rest
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_stale_partial_file_that_does_not_verify_is_downloaded_again(server, tmp_path):
    url, sha = server.add("data.bin", PAYLOAD)
    (tmp_path / "data.bin.part").write_bytes(b"from an older version of the file")
    fetch(Source(url=url, sha256=sha), tmp_path / "data.bin")
    assert server.httpd.ranges == ["bytes=33-", None]
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_killed_download_leaves_nothing_complete_and_a_rerun_resumes(server, tmp_path):
    data = os.urandom(3_000_000)
    url, sha = server.add("big.bin", data)
    server.httpd.throttle = 0.05  # ~1.3 MB/s: the kill lands mid-way
    dest = tmp_path / "big.bin"
    part = tmp_path / "big.bin.part"
    code = (
        f"from stages.common.download import fetch; from stages.common.params import Source; "
        f"fetch(Source(url={url!r}, sha256={sha!r}), {str(dest)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not (part.exists() and part.stat().st_size >= 300_000):
            assert proc.poll() is None and time.monotonic() < deadline, "download never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert not dest.exists()  # only the .part, which never looks complete
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    server.httpd.throttle = 0.0
    fetch(Source(url=url, sha256=sha), dest)
    assert server.httpd.ranges[-1] == f"bytes={kept}-"
    assert sha256_file(dest) == sha and not part.exists()


def test_unreachable_url_without_mirror_names_what_was_tried_and_how_to_fix_it(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/datasets/data.zip"
    with pytest.raises(DownloadError) as err:
        fetch(Source(url=url, sha256=SHA), tmp_path / "data.zip", retries=1, backoff=0.01)
    message = str(err.value)
    assert url in message and "Connection refused" in message
    assert "fix: set LESSON5_MIRROR to a folder holding data.zip and a SHA256SUMS file" in message
    monkeypatch.setenv("LESSON5_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(DownloadError) as err:
        fetch(Source(url=url, sha256=SHA), tmp_path / "data.zip", retries=0)
    assert f"mirror file {tmp_path / 'mirror' / 'data.zip'} (the mirror folder does not exist)" in str(err.value)
    assert url in str(err.value)
    assert not (tmp_path / "data.zip").exists()


def test_unpinned_source_is_trusted_on_first_use_recorded_and_verified_later(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "sources.lock.yaml", tmp_path)
    url, sha = server.add("corpus.txt", PAYLOAD)
    record = TrustRecord("text")
    assert fetch(Source(url=url), tmp_path / "a" / "corpus.txt", record=record).read_bytes() == PAYLOAD
    lock = yaml.safe_load((tmp_path / "sources.lock.yaml").read_text())
    assert lock["text"] == {url: {"sha256": sha, "bytes": len(PAYLOAD)}}
    assert all(lock[section] == {} for section in ("movielens", "imdb", "glove", "dogscats"))  # sections apart
    # what DVC depends on for the other download stages is unchanged, byte for byte
    assert (tmp_path / "sources.lock.yaml").read_text().split("text:")[0] == (
        REPO / "sources.lock.yaml"
    ).read_text().split("text:")[0]

    # a later download must match the record: a changed file is refused and deleted, naming both hashes
    changed = PAYLOAD[::-1]
    server.add("corpus.txt", changed)
    dest = tmp_path / "b" / "corpus.txt"
    with pytest.raises(ChecksumError) as err:
        fetch(Source(url=url), dest, record=record)
    message = str(err.value)
    assert f"expected sha256 {sha}" in message and hashlib.sha256(changed).hexdigest() in message
    assert "recorded in sources.lock.yaml (section text)" in message
    assert not dest.exists() and not dest.with_name("corpus.txt.part").exists()
    assert yaml.safe_load((tmp_path / "sources.lock.yaml").read_text())["text"][url]["sha256"] == sha  # kept

    # deleting the entry accepts the new version on its next download
    (tmp_path / "sources.lock.yaml").write_text((REPO / "sources.lock.yaml").read_text())
    assert fetch(Source(url=url), dest, record=record).read_bytes() == changed


def test_strict_setting_refuses_an_unpinned_source_with_the_hash_to_pin(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LESSON5_REQUIRE_PINNED", "1")
    url, sha = server.add("data.bin", PAYLOAD)
    dest = tmp_path / "data.bin"
    with pytest.raises(UnpinnedSourceError) as err:
        fetch(Source(url=url, sha256=None), dest, record=TrustRecord("text"))
    assert f"pin it in params.yaml next to its url:  sha256: {sha}" in str(err.value)
    assert "LESSON5_REQUIRE_PINNED=1" in str(err.value)
    assert not dest.exists() and not (tmp_path / "sources.lock.yaml").exists()
    # pinning the printed hash reuses the kept download: the server is only asked for bytes past its end
    fetch(Source(url=url, sha256=sha), dest)
    assert server.httpd.ranges[-1] == f"bytes={len(PAYLOAD)}-"
    assert dest.read_bytes() == PAYLOAD


def test_a_source_pinned_by_md5_alone_is_verified_by_md5(server, tmp_path):
    url, _ = server.add("weights.h5", PAYLOAD)
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert fetch(Source(url=url, md5=md5), tmp_path / "w.h5").read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError, match=f"expected md5 {'0' * 32} \\(pinned in params.yaml\\), got md5 {md5}"):
        fetch(Source(url=url, md5="0" * 32), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("url", ["ftp://example.org/x.zip", "s3://bucket/x.zip"])
def test_unsupported_scheme_is_a_clear_error(tmp_path, url):
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        fetch(Source(url=url, sha256=SHA), tmp_path / "x.zip")


@pytest.mark.slow
def test_a_real_download_stage_trusts_on_first_use_and_dvc_records_the_hash(project, http_server):
    """text_download with no checksum on record: the first run records the sha256 in sources.lock.yaml, which is
    the stage's param, so `dvc status` is clean after it; a changed file at the URL is then refused."""
    corpus = b"the will to power " * 200
    url, sha = http_server.add("corpus.txt", corpus)
    project.set_params({"text.source": {"url": url, "sha256": None}})
    project.dvc("repro", "text_download")
    assert yaml.safe_load((project.root / "sources.lock.yaml").read_text())["text"] == {
        url: {"sha256": sha, "bytes": len(corpus)}
    }
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())["stages"]["text_download"]
    assert lock["params"]["sources.lock.yaml"]["text"][url]["sha256"] == sha
    assert "changed" not in project.dvc("status", "text_download").stdout

    # a download again (the file is gone) gets another file from the URL: refused, naming both hashes
    http_server.add("corpus.txt", corpus + b"tampered")
    shutil.rmtree(project.root / "data/text/raw")
    result = project.dvc("repro", "text_download", check=False)
    output = result.stderr + result.stdout
    assert result.returncode != 0 and f"expected sha256 {sha}" in output
    assert hashlib.sha256(corpus + b"tampered").hexdigest() in output
    assert not (project.root / "data/text/raw/corpus.txt").exists()


@pytest.mark.slow
def test_switching_the_mirror_never_restores_another_mirrors_file_from_the_run_cache(project, tmp_path):
    def mirror(name: str, data: bytes) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "nietzsche.txt").write_bytes(data)
        (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  nietzsche.txt\n")
        return str(folder)

    corpus = project.root / "data/text/raw/corpus.txt"
    project.env["LESSON5_MIRROR"] = mirror("a", b"from mirror a " * 100)
    project.dvc("repro", "text_download")
    assert corpus.read_bytes().startswith(b"from mirror a")
    shutil.rmtree(corpus.parent)
    project.env["LESSON5_MIRROR"] = mirror("b", b"from mirror b " * 100)
    project.dvc("repro", "text_download")
    assert corpus.read_bytes().startswith(b"from mirror b")  # fetched and verified, not restored
