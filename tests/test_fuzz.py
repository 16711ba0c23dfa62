"""Fuzzing (hypothesis) the parsers that read user-supplied input: params.yaml and its schema, the MovieLens
ratings files, and archives. Each either succeeds or fails with the project's own clear error type,
never with another exception and never by writing outside its target folder."""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stages.common.archive import UnsafeArchiveError, extract
from stages.common.cli import StageError
from stages.common.params import ParamsError, read_params_file, validate_section
from stages.movielens import data as movielens_data
from stages.movielens.params import MovieLensParams
from tests.conftest import REPO

# CI (CI=true) draws the same examples every run, so a red build is never the luck of the draw; locally each run
# explores new ones
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("CI") == "true",
)
REAL_MOVIELENS = yaml.safe_load((REPO / "params.yaml").read_text())["movielens"]

# ---------------------------------------------------------------- params.yaml
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


ALL_PATHS = [p for p in paths(REAL_MOVIELENS) if p]


@st.composite
def mutated_movielens(draw):
    """The real movielens section with a few values replaced, keys deleted or unknown keys added."""
    section = copy.deepcopy(REAL_MOVIELENS)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = section
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced this path
    return section


@FUZZ
@given(mutated_movielens())
def test_params_schema_accepts_or_names_the_problem(section):
    try:
        validate_section("movielens", section, MovieLensParams)
    except ParamsError as err:
        assert "movielens" in str(err) and "invalid params" in str(err)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=100),
        st.builds(lambda v: yaml.safe_dump({"movielens": v}).encode(), values),
    )
)
@example(b"movielens: &a [*a]\n")
@example(b"a: " + b"[" * 2000)
@example(b"\x00\x01")
@example(b"movielens: caf\xe9\n")
def test_params_file_parser_never_crashes(tmp_path, blob):
    path = tmp_path / "params.yaml"
    path.write_bytes(blob)
    try:
        raw = read_params_file(path)
    except ParamsError:
        return
    assert isinstance(raw, dict)
    try:
        validate_section("movielens", raw.get("movielens"), MovieLensParams)
    except ParamsError:
        pass


# ---------------------------------------------------------------- MovieLens ratings
cells = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "NA", "nan", "3.5", "1e3", "0x10", '"4"', "five", "1,5", '"', "\t"]),
    st.text(max_size=6),
)
rows = st.lists(st.lists(cells, min_size=0, max_size=6).map(",".join), max_size=12)
headers = st.sampled_from(
    [
        "userId,movieId,rating,timestamp",
        "userId,movieId,rating",
        "movieId,rating",
        "userId,userId,movieId,rating",
        "",
        "userId;movieId;rating",
    ]
)


def check_ratings(raw_dir: Path, dataset: str) -> None:
    path = raw_dir / movielens_data.FORMATS[dataset][0]
    try:
        ratings = movielens_data.read_ratings(raw_dir, dataset)
    except StageError as err:
        message = str(err)
        assert str(path) in message
        if "malformed ratings file" not in message:  # pandas' own parser message names the line itself
            line = int(re.search(r", line (\d+)", message).group(1))
            # pandas ends a line at \r, \n or \r\n, as bytes.splitlines() does
            assert 1 <= line <= len(path.read_bytes().splitlines()) + 1
        return
    assert list(ratings.columns) == ["userId", "movieId", "rating"]
    assert ratings["rating"].between(0.5, 5.0).all()
    assert ratings.index.equals(pd.RangeIndex(len(ratings)))


def write_ratings(raw_dir: Path, dataset: str, blob: bytes) -> None:
    path = raw_dir / movielens_data.FORMATS[dataset][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


@FUZZ
@given(headers, rows)
@example("userId,movieId,rating,timestamp", ["1,1,4,0", "", "2,2,9,0"])  # a blank line shifts nothing
def test_ratings_reader_rows(tmp_path, header, body):
    blob = ("\n".join([header, *body]) + "\n").encode("utf-8", "surrogatepass")
    write_ratings(tmp_path, "ml-latest-small", blob)
    check_ratings(tmp_path, "ml-latest-small")


def test_ratings_reader_names_the_right_line_after_blank_lines(tmp_path):
    write_ratings(tmp_path, "ml-latest-small", b"userId,movieId,rating,timestamp\n1,1,4,0\n\n\n2,2,9,0\n")
    with pytest.raises(StageError, match=r"ratings.csv, line 5: bad rating row .*rating='9'"):
        movielens_data.read_ratings(tmp_path, "ml-latest-small")


@FUZZ
@given(st.sampled_from(sorted(movielens_data.FORMATS)), st.binary(max_size=300))
@example("ml-latest-small", b"userId,movieId,rating\n1,2,\xff\xfe\n")
@example("ml-latest-small", b"")
@example("ml-1m", b"1::2::3::4\n1::2\n")
@example("ml-100k", b"1\t2\t3\t4\n1\t2\tx\t4\n")
@example("ml-latest-small", b"userId,movieId,rating\n1,2,3\x00\n")
@example("ml-100k", b"\r\xc2\x80")  # a lone \r ends a line for pandas
def test_ratings_reader_bytes(tmp_path, dataset, blob):
    write_ratings(tmp_path, dataset, blob)
    check_ratings(tmp_path, dataset)


# ---------------------------------------------------------------- archives
def sample_archives() -> dict[str, bytes]:
    files = {"d/a.txt": b"alpha " * 50, "d/sub/b.bin": bytes(range(256)), "c.txt": b"gamma"}
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    out = {"zip": zbuf.getvalue()}
    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        tbuf = io.BytesIO()
        with tarfile.open(fileobj=tbuf, mode=mode) as tf:
            for name, blob in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
        out[mode] = tbuf.getvalue()
    return out


ARCHIVES = sample_archives()


@st.composite
def damaged_archives(draw):
    blob = bytearray(ARCHIVES[draw(st.sampled_from(sorted(ARCHIVES)))])
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if action == "flip" and blob:
            blob[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del blob[at : at + draw(st.integers(1, 64))]
        else:
            blob[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(blob)


def check_extract(tmp_path: Path, blob: bytes) -> None:
    root = tmp_path / "case"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    archive, dest = root / "input.bin", root / "work" / "out"
    archive.write_bytes(blob)
    try:
        extract(archive, dest)
    except UnsafeArchiveError:
        assert not dest.exists()
    for path in root.rglob("*"):
        assert path.is_relative_to(root) and not path.is_symlink()
        assert path == archive or path.is_relative_to(dest) or path in (dest.parent,)


@FUZZ
@given(damaged_archives())
def test_damaged_archives_extract_or_fail_cleanly(tmp_path, blob):
    check_extract(tmp_path, blob)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_are_never_extracted_unsafely(tmp_path, blob):
    check_extract(tmp_path, blob)


# ---------------------------------------------------------------- the other workloads' parsers
def workload_schemas():
    from stages.dogscats.params import DogsCatsParams
    from stages.glove.params import GloveParams
    from stages.imdb.params import ImdbParams
    from stages.text.params import TextParams

    return {"imdb": ImdbParams, "glove": GloveParams, "dogscats": DogsCatsParams, "text": TextParams}


REAL_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


@st.composite
def mutated_section(draw):
    name = draw(st.sampled_from(sorted(workload_schemas())))
    section = copy.deepcopy(REAL_PARAMS[name])
    targets = [p for p in paths(section) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(targets))
        parent = section
        try:
            for part in path[:-1]:
                parent = parent[part]
            if draw(st.booleans()):
                parent[path[-1]] = draw(values)
            elif isinstance(parent, dict):
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass
    return name, section


@FUZZ
@given(mutated_section())
def test_every_workload_schema_accepts_or_names_the_problem(case):
    name, section = case
    try:
        validate_section(name, section, workload_schemas()[name])
    except ParamsError as err:
        assert name in str(err)


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=4).map(
                lambda xs: ("w " + " ".join(map(str, xs))).encode()
            ),
        ),
        max_size=6,
    )
)
@example([b"the 0.1 0.2 0.3", b"caf\xe9 1 2 3"])
@example([b"the 0.1 0.2 0.3", b"a 1 2 x"])
def test_glove_reader(tmp_path, lines):
    from stages.common.word_vectors import read_glove

    path = tmp_path / "glove.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for dim in (3, None):  # None: as wide as the first line (imdb_glove_matrix)
        try:
            words, vectors = read_glove(path, dim=dim)
        except StageError as err:
            assert str(path) in str(err)
            continue
        assert len(vectors) == len(words) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
        assert dim is None or vectors.shape == (len(words), 3)


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=4), st.lists(st.binary(max_size=40), max_size=4))
@example([b"\xff\xfe bad"], [b"  \n "])
def test_imdb_review_reader(tmp_path, neg, pos):
    from stages.imdb.reviews import read_reviews

    archive = tmp_path / "reviews.tar"
    with tarfile.open(archive, "w") as tar:
        for split in ("train", "test"):
            for label, reviews in (("neg", neg), ("pos", pos)):
                for i, blob in enumerate(reviews):
                    info = tarfile.TarInfo(f"aclImdb/{split}/{label}/{i}_{i % 10 + 1}.txt")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    try:
        reviews = read_reviews(archive)
    except StageError as err:
        assert str(archive) in str(err)
        return
    for texts, labels, skipped in reviews.values():
        assert len(texts) == len(labels) and len(texts) + len(skipped) == len(neg) + len(pos)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["repair", "replace", "strict"]))
@example(b"werthsch\xe3\xa4tzung \xff", "repair")
def test_corpus_decoder(blob, errors):
    from stages.text.corpus import decode

    try:
        text, counts = decode(blob, errors=errors)
    except StageError as err:
        assert errors == "strict" and "line" in str(err)
        return
    text.encode("utf-8")  # no lone surrogates leak out
    assert counts["replaced_bytes"] >= 0 and counts["repaired_chars"] >= 0


def image_samples() -> list[bytes]:
    from PIL import Image

    out = []
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "L")):
        buf = io.BytesIO()
        Image.new(mode, (6, 5), color=0 if mode in ("P", "L") else (200, 100, 50)[: len(mode)]).save(buf, fmt)
        out.append(buf.getvalue())
    return out


IMAGES = image_samples()


@FUZZ
@given(
    st.sampled_from(range(len(IMAGES))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    st.integers(0, 400),
)
def test_image_loader(which, flips, cut):
    from stages.dogscats.images import Unusable, load_rgb

    blob = bytearray(IMAGES[which])
    for at, value in flips:
        blob[at % len(blob)] = value
    try:
        loaded = load_rgb(bytes(blob[: len(blob) - cut] if cut < len(blob) else blob), max_pixels=10_000)
    except Unusable:
        return
    assert loaded.image.mode == "RGB"
