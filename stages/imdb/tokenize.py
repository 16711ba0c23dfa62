"""imdb_tokenize: read the reviews, build the training vocabulary, encode, pad, and carve a validation split.

Style "plain" follows Keras TextVectorization's default semantics (lowercase, ASCII punctuation deleted,
split on whitespace) after the `<br />` markup is replaced by a space. The plain-Python version
here is faster than TextVectorization on this CPU (benchmarks/imdb.py measures both).
Style "keras" spells words as Keras' pre-tokenized IMDB set did (the data fast.ai trained on): apostrophes inside
words are kept (don't, boy's) and every `<br />` leaves a "br" word.
"""

from __future__ import annotations

import itertools
import re
import string
import sys
import time
from collections import Counter

import numpy as np

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, save_npy, write_csv, write_json
from stages.imdb import params as imdb_params
from stages.imdb.params import Style, TokenizeParams
from stages.imdb.paths import ARCHIVE, TOKENIZED
from stages.imdb.reviews import SEPARATOR, read_reviews
from stages.imdb.sequences import pad

BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")  # a regex: 8x faster than str.translate here
PUNCTUATION_BUT_APOSTROPHE = re.compile("[" + re.escape(string.punctuation.replace("'", "")) + "]")
QUOTE = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")  # an apostrophe not between two letters/digits
# style -> the (pattern, replacement) steps applied in turn to the lowercased text; keras strips quotes once the
# other punctuation is gone. (Splitting words at punctuation instead matches Keras' set's token counts exactly but
# scored lower: README, "Why fast.ai's numbers don't come free".)
STYLES = {
    "plain": ((BREAK, " "), (PUNCTUATION, "")),
    "keras": ((BREAK, " br "), (PUNCTUATION_BUT_APOSTROPHE, ""), (QUOTE, "")),
}


def words(texts: list[str], style: Style = "plain") -> list[list[str]]:
    """Each review as lowercase words split on whitespace. plain: `<br />` -> space, ASCII punctuation deleted;
    keras: `<br />` -> "br", punctuation deleted but apostrophes inside words."""
    joined = SEPARATOR.join(texts).lower()
    for pattern, replacement in STYLES[style]:
        joined = pattern.sub(replacement, joined)
    return [chunk.split() for chunk in joined.split(SEPARATOR)]


def build_vocab(tokenized: list[list[str]], vocab_size: int) -> list[tuple[str, int]]:
    """The vocab_size-2 most frequent words with their counts (ties by word); ids 1.. in this order."""
    counts = Counter(itertools.chain.from_iterable(tokenized))
    if vocab_size - 2 > len(counts):
        raise StageError(
            f"imdb.tokenize.vocab_size = {vocab_size} but the training reviews have only "
            f"{len(counts):,} distinct words; set vocab_size to at most {len(counts) + 2:,} "
            "(2 ids are reserved: 0 padding, vocab_size-1 rare words)"
        )
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - 2]


def encode(
    tokenized: list[list[str]], vocab: list[str], maxlen: int, padding: str = "pre", truncating: str = "pre"
) -> np.ndarray:
    """int32 (n, maxlen) ids: 0 padding, 1..len(vocab) words, len(vocab)+1 the shared rare-word id."""
    index = {word: i for i, word in enumerate(vocab, start=1)}
    rare = len(vocab) + 1
    return pad([[index.get(word, rare) for word in review] for review in tokenized], maxlen, padding, truncating)


def stratified_valid_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for the seeded, per-class `fraction` of rows held out for validation."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        mask[rng.permutation(rows)[: round(fraction * len(rows))]] = True
    return mask


def length_stats(tokenized: list[list[str]]) -> dict[str, float]:
    lengths = np.fromiter((len(r) for r in tokenized), dtype=np.int64, count=len(tokenized))
    return {"mean": float(lengths.mean()), "max": int(lengths.max()), "median": float(np.median(lengths))}


def tokenize(train_texts: list[str], test_texts: list[str], p: TokenizeParams):
    """Pure step: (arrays dict, vocabulary [(word, count)], stats)."""
    train_words, test_words = words(train_texts, p.style), words(test_texts, p.style)
    vocab = build_vocab(train_words, p.vocab_size)
    names = [w for w, _ in vocab]
    arrays = {
        "train_x": encode(train_words, names, p.maxlen, p.padding, p.truncating),
        "test_x": encode(test_words, names, p.maxlen, p.padding, p.truncating),
    }
    rare = p.vocab_size - 1
    stats = {
        "train_tokens": length_stats(train_words),
        "test_tokens": length_stats(test_words),
        "train_rare_fraction": float(np.mean(arrays["train_x"][arrays["train_x"] > 0] == rare)),
        "distinct_train_words": len(set(itertools.chain.from_iterable(train_words))),
    }
    return arrays, vocab, stats


def main() -> None:
    p = imdb_params.load().tokenize
    started = time.perf_counter()
    reviews = read_reviews(ARCHIVE)
    (train_texts, train_y, skipped_train), (test_texts, test_y, skipped_test) = reviews["train"], reviews["test"]
    read_s = time.perf_counter() - started
    arrays, vocab, stats = tokenize(train_texts, test_texts, p)
    seconds = time.perf_counter() - started
    skipped = skipped_train + skipped_test
    for line in skipped[:20]:
        print(f"skipped {line}", file=sys.stderr)
    valid = stratified_valid_mask(train_y, p.valid_fraction, p.seed)
    # timings are printed, not stored here: an output that differs on every run would retrain all five models
    stats.update(
        style=p.style,
        maxlen=p.maxlen,
        padding=p.padding,
        truncating=p.truncating,
        vocab_size=p.vocab_size,
        n_train=int((~valid).sum()),
        n_valid=int(valid.sum()),
        n_test=len(test_y),
        skipped=len(skipped),
    )
    import pandas as pd

    with atomic_dir(TOKENIZED) as out:
        for name, array in {**arrays, "train_y": train_y, "test_y": test_y, "valid": valid}.items():
            save_npy(out / f"{name}.npy", array)
        write_csv(
            out / "vocab.csv",
            pd.DataFrame(
                {"id": np.arange(1, len(vocab) + 1), "word": [w for w, _ in vocab], "count": [c for _, c in vocab]}
            ),
        )
        write_json(out / "stats.json", stats)
    print(
        f"read + tokenized + encoded {len(train_y) + len(test_y):,} reviews in {seconds:.1f} s "
        f"(reading {read_s:.1f} s); "
        f"{len(skipped)} skipped; train length mean {stats['train_tokens']['mean']:.1f}, "
        f"max {stats['train_tokens']['max']:,} tokens; {stats['n_train']:,} train / {stats['n_valid']:,} valid / "
        f"{stats['n_test']:,} test"
    )


if __name__ == "__main__":
    run_stage(main)
