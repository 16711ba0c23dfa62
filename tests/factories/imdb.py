"""Small generated IMDB review archives and GloVe archives whose words match the reviews' vocabulary."""

from __future__ import annotations

import io
import random
import tarfile
import zipfile

import numpy as np

POSITIVE = ["great", "excellent", "wonderful", "loved", "best", "superb"]
NEGATIVE = ["awful", "boring", "worst", "terrible", "waste", "dull"]
NEUTRAL = ["the", "movie", "film", "was", "a", "and", "it", "plot", "actor", "story", "of", "this", "i"]
# the one word of the unlabelled reviews: it would be the most frequent training word if they were ever read
UNLABELLED_WORD = "unlabelledonly"


def review(rng: random.Random, label: int) -> str:
    mood = POSITIVE if label else NEGATIVE
    body = [rng.choice(NEUTRAL if rng.random() < 0.7 else mood) for _ in range(rng.randint(8, 30))]
    return " ".join(body).capitalize() + ".<br /><br />" + rng.choice(mood).upper() + "!"


def imdb_archive(
    n_per_class: int, extra: dict[str, bytes] | None = None, without: str | None = None, full_layout: bool = False
) -> bytes:
    """A tar.gz laid out like aclImdb_v1.tar.gz: `extra` members added, the `without` folder left out.

    `full_layout`: also everything else the released archive holds (README, imdbEr.txt, the bag-of-words
    `.feat` files, the `urls_*.txt` lists and `train/unsup/` with twice as many unlabelled reviews as labelled
    training reviews, as in the release), so that only the reader's selection keeps them out.
    """
    members = {}
    rng = random.Random(1)
    for split in ("train", "test"):
        for name, label in (("neg", 0), ("pos", 1)):
            for i in range(n_per_class):
                members[f"aclImdb/{split}/{name}/{i}_{7 if label else 2}.txt"] = review(rng, label).encode()
    if full_layout:
        members.update(_released_extras(n_per_class))
    members.update(extra or {})
    members.setdefault("aclImdb/imdb.vocab", b"not a review\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            if without and name.startswith(without + "/"):
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _released_extras(n_per_class: int) -> dict[str, bytes]:
    vocabulary = NEUTRAL + POSITIVE + NEGATIVE
    n_unsup = 4 * n_per_class
    bag = "".join(f"{7 if i % 2 else 2} 0:3 1:1 {2 + i % 20}:2\n" for i in range(2 * n_per_class)).encode()

    def urls(n: int) -> bytes:
        return "".join(f"http://www.imdb.com/title/tt{i:07d}/usercomments\n" for i in range(n)).encode()

    members = {
        "aclImdb/README": b"Large Movie Review Dataset v1.0\n\nThe core dataset contains 50,000 reviews.\n",
        "aclImdb/imdb.vocab": "".join(f"{w}\n" for w in vocabulary).encode(),
        "aclImdb/imdbEr.txt": "".join(f"{0.1 * (i - 12):.4f}\n" for i in range(len(vocabulary))).encode(),
        "aclImdb/train/labeledBow.feat": bag,
        "aclImdb/test/labeledBow.feat": bag,
        "aclImdb/train/unsupBow.feat": "".join(f"0 0:{i + 1}\n" for i in range(n_unsup)).encode(),
        "aclImdb/train/urls_unsup.txt": urls(n_unsup),
    }
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            members[f"aclImdb/{split}/urls_{label}.txt"] = urls(n_per_class)
    for i in range(n_unsup):
        members[f"aclImdb/train/unsup/{i}_0.txt"] = " ".join([UNLABELLED_WORD] * 40).encode()
    return members


def glove_text(dim: int = 50, extra: list[str] = ()) -> str:
    rng = np.random.default_rng(0)
    vocabulary = ["the", ",", "."] + NEUTRAL[1:] + POSITIVE + NEGATIVE[:-1] + list(extra)  # 'dull' is not in GloVe
    return "".join(f"{w} " + " ".join(f"{v:.5f}" for v in rng.normal(size=dim)) + "\n" for w in vocabulary)


def glove_archive(dims: tuple[int, ...] = (50,), n_words: int = 0) -> bytes:
    """A zip of glove.6B.<dim>d.txt members, one per dim (glove.6B.zip holds 50, 100, 200 and 300), each with the
    reviews' words (all but 'dull') followed by filler words up to `n_words` lines."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for dim in dims:
            text = glove_text(dim)
            filler = [f"filler{i}" for i in range(max(0, n_words - text.count("\n")))]
            zf.writestr(f"glove.6B.{dim}d.txt", glove_text(dim, extra=filler))
    return buffer.getvalue()
