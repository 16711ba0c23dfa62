"""The readers on the canonical archives' layouts (../shared/canonical-sources.md), not only on the offline
mirror's trimmed copies: each test serves a small generated archive laid out as the release over loopback and runs
the real download and prepare/tokenize stages with `dvc repro` in a throwaway copy of the project."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.dogscats import measure
from stages.dogscats.prepare import OUTSIDE
from tests.factories.dogscats import RELEASE_ROOT_FILES, release_pet_archive
from tests.factories.imdb import UNLABELLED_WORD, glove_archive, imdb_archive
from tests.factories.movielens import ACCENTED_TITLE, movielens_zip, ratings_table

pytestmark = pytest.mark.slow

REVIEWS_PER_CLASS = 30  # per split: 60 labelled train and 60 test reviews, 240 unlabelled ones
IMDB_TOKENIZE = {"imdb.tokenize.vocab_size": 12, "imdb.tokenize.maxlen": 24}  # 10 words: the reviews hold 25
GLOVE_DIMS = (50, 100, 200, 300)  # glove.6B.zip's members
GLOVE_WORDS = 300


@pytest.fixture(scope="module")
def imdb_release() -> bytes:
    return imdb_archive(REVIEWS_PER_CLASS, full_layout=True)


@pytest.fixture(scope="module")
def glove_release() -> bytes:
    return glove_archive(GLOVE_DIMS, n_words=GLOVE_WORDS)


def serve_imdb(project, http_server, imdb_release: bytes) -> None:
    url, sha = http_server.add("aclImdb_v1.tar.gz", imdb_release)
    project.set_params({"imdb.source": {"url": url, "sha256": sha}, **IMDB_TOKENIZE})


# ---------------------------------------------------------------- MovieLens


@pytest.mark.parametrize("dataset", ["ml-latest-small", "ml-100k", "ml-1m"])
def test_movielens_release_layout_prepares_exactly_its_ratings(project, http_server, dataset):
    rows = ratings_table(n_users=25, n_movies=40, per_user=16)
    url, sha = http_server.add(f"{dataset}.zip", movielens_zip(rows, dataset=dataset, full_layout=True))
    project.set_params({"movielens.dataset": dataset, f"movielens.sources.{dataset}": {"url": url, "sha256": sha}})
    project.dvc("repro", "movielens_prepare")

    prepared = project.root / "data/movielens/prepared"
    stats = json.loads((prepared / "stats.json").read_text())
    assert (stats["n_ratings"], stats["n_users"], stats["n_movies"]) == (len(rows), 25, 40)
    # every rating, once: the README, links, tags, users and ml-100k's u1/ua splits (the same ratings again) unread
    ratings = (
        pd.read_parquet(prepared / "ratings.parquet")
        .merge(pd.read_parquet(prepared / "users.parquet"), on="user")
        .merge(pd.read_parquet(prepared / "movies.parquet"), on="movie")
    )
    got = sorted(zip(ratings["userId"], ratings["movieId"], ratings["rating"]))
    integer_stars = dataset != "ml-latest-small"  # ml-100k and ml-1m rate in whole stars
    assert got == sorted((u, m, max(1, round(r)) if integer_stars else r) for u, m, r, _ in rows)
    titles = pd.read_parquet(prepared / "movies.parquet").set_index("movieId")["title"]
    assert titles[max(r[1] for r in rows)] == ACCENTED_TITLE  # Latin-1 in ml-100k and ml-1m, UTF-8 in the CSV


# ---------------------------------------------------------------- IMDB


def test_imdb_release_layout_tokenizes_only_the_labelled_reviews(project, http_server, imdb_release):
    serve_imdb(project, http_server, imdb_release)
    project.dvc("repro", "imdb_tokenize")

    tokenized = project.root / "data/imdb/tokenized"
    stats = json.loads((tokenized / "stats.json").read_text())
    labelled = 2 * REVIEWS_PER_CLASS
    assert stats["n_train"] + stats["n_valid"] == labelled and stats["n_test"] == labelled and stats["skipped"] == 0
    for split in ("train", "test"):
        labels = np.load(tokenized / f"{split}_y.npy")
        assert np.bincount(labels).tolist() == [REVIEWS_PER_CLASS, REVIEWS_PER_CLASS]
        assert np.load(tokenized / f"{split}_x.npy").shape == (labelled, IMDB_TOKENIZE["imdb.tokenize.maxlen"])
    # the unlabelled reviews repeat one word 40 times each: read, it would top the vocabulary
    vocab = pd.read_csv(tokenized / "vocab.csv", keep_default_na=False)["word"].tolist()
    assert len(vocab) == 10 and UNLABELLED_WORD not in vocab


# ---------------------------------------------------------------- GloVe


@pytest.mark.parametrize("dim", [100, 200, 300])
def test_glove_release_zip_gives_only_the_configured_width(project, http_server, imdb_release, glove_release, dim):
    serve_imdb(project, http_server, imdb_release)
    url, sha = http_server.add("glove.6B.zip", glove_release)
    project.set_params(
        {
            "glove.source": {"url": url, "sha256": sha},
            "glove.dim": dim,
            "glove.tsne.n_words": 40,
            "glove.tsne.n_labelled": 10,
            "glove.tsne.perplexity": 5,
        }
    )
    project.dvc("repro", "imdb_glove_matrix", "glove_tsne")

    root = project.root
    member = f"glove.6B.{dim}d.txt"
    assert [p.name for p in (root / "data/glove/raw").iterdir()] == [member]
    lines = (root / "data/glove/raw" / member).read_text().splitlines()
    assert len(lines) == GLOVE_WORDS and {len(line.split(" ")) for line in lines} == {dim + 1}
    vectors = {line.split(" ")[0]: np.array(line.split(" ")[1:], dtype="float32") for line in lines}

    matrix = np.load(root / "data/imdb/glove/embedding.npy")
    in_glove = np.load(root / "data/imdb/glove/in_glove.npy")
    vocab = pd.read_csv(root / "data/imdb/tokenized/vocab.csv", keep_default_na=False)["word"].tolist()
    assert matrix.shape == (IMDB_TOKENIZE["imdb.tokenize.vocab_size"], dim)
    hits = [row for row, word in enumerate(vocab, start=1) if word in vectors]
    assert hits and np.flatnonzero(in_glove).tolist() == hits
    divide_by = project.params["imdb"]["glove_matrix"]["divide_by"]
    for row in hits:  # the rows come from the configured member
        np.testing.assert_allclose(matrix[row], vectors[vocab[row - 1]] / divide_by, rtol=1e-6)
    assert len(pd.read_csv(root / "data/glove/tsne/glove_tsne.csv")) == 40

    # the other widths are never extracted: no file anywhere in the copy (DVC's cache included) holds one
    with zipfile.ZipFile(io.BytesIO(glove_release)) as zf:
        others = {name: zf.read(name) for name in zf.namelist() if name != member}
    assert len(others) == 3
    downloaded = root / ".cache/downloads/glove.6B.zip"
    assert downloaded.read_bytes() == glove_release
    sizes = {len(data) for data in others.values()}
    for path in root.rglob("*"):
        if path.is_file() and path != downloaded:
            assert path.name not in others, path
            assert path.stat().st_size not in sizes or path.read_bytes() not in others.values(), path


# ---------------------------------------------------------------- Dogs vs Cats


def test_pet_release_layout_uses_the_photos_and_reports_every_other_file(project, http_server, tmp_path):
    per_class = 6
    images_url, images_sha = http_server.add(
        "kagglecatsanddogs_5340.zip", release_pet_archive(tmp_path / "src", per_class)
    )
    # dogscats_download fetches the VGG16 weights too; dogscats_prepare never reads them
    weights_url, weights_sha = http_server.add("vgg16_notop.h5", b"not read by dogscats_prepare")
    project.set_params(
        {
            "dogscats.sources.images": {"url": images_url, "sha256": images_sha},
            "dogscats.sources.weights": {"url": weights_url, "sha256": weights_sha},
            "dogscats.prepare.max_per_class": None,
        }
    )
    project.dvc("repro", "dogscats_prepare")

    prepared = project.root / "data/dogscats/prepared"
    report = json.loads((prepared / "report.json").read_text())
    unknown = "not an image (unknown format)"
    assert {s["file"]: s["reason"] for s in report["skipped_files"]} == {
        "Cat/666.jpg": "empty file",
        "Cat/Thumbs.db": unknown,
        "Dog/11702.jpg": "empty file",
        "Dog/Thumbs.db": unknown,
        **{name: OUTSIDE for name in RELEASE_ROOT_FILES},
    }
    assert report["skipped_by_reason"] == {"empty file": 2, unknown: 2, "not under PetImages/<class>/": 2}
    assert report["converted_to_rgb"] == {"JPEG CMYK": 1, "JPEG L": 1, "PNG RGB": 1}
    assert report["usable"] == 2 * per_class + 3 and report["scanned"] == report["usable"] + 6

    manifest = pd.read_csv(prepared / "manifest.csv")
    photos = {f"{label}/{i}.jpg" for label in ("Cat", "Dog") for i in range(per_class)}
    converted = {"Cat/cmyk.jpg", "Dog/grey.jpg", "Dog/png_named.jpg"}
    assert set(manifest["source"]) == photos | converted and len(manifest) == report["usable"]
    assert {c: sum(report["used"][s][c] for s in ("train", "valid")) for c in ("Cat", "Dog")} == {"Cat": 7, "Dog": 8}
    for source, path in zip(manifest["source"], manifest["path"]):
        with Image.open(prepared / path) as img:
            assert img.mode == "RGB" and img.format == ("PNG" if source in converted else "JPEG"), source


def test_preparing_as_many_photos_as_the_release_stays_under_2_gb(project):
    figures = measure(project, per_class=12_500)
    report = figures["report"]
    assert report["usable"] == 25_000 and report["skipped"] == 0
    assert sum(n for split in report["used"].values() for n in split.values()) == 25_000
    # the bound can fail: a prepare that kept every decoded photo would need more than it
    assert figures["decoded_photos_mb"] > 2048
    assert figures["peak_rss_mb"] < 2048, figures
