"""text_prepare: decode the corpus robustly, build character and word vocabularies, hold out the tail."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, save_npy, write_json
from stages.text import corpus
from stages.text import params as text_params
from stages.text.params import PrepareParams
from stages.text.paths import CORPUS, PREPARED, RAW


def prepare(data: bytes, p: PrepareParams, where: str = "corpus") -> tuple[dict[str, np.ndarray], dict, dict]:
    """Pure step: (id arrays, vocabularies, stats) from the raw bytes of the corpus."""
    if not data.strip():
        raise StageError(
            f"{where} is empty ({len(data)} bytes, no text): check text.source.url, or delete {RAW} and download again"
        )
    text, fixed = corpus.decode(data, p.decode_errors, p.replacement, where)
    if p.lowercase:
        text = text.lower()
    train_text, valid_text = corpus.split_tail(text, p.valid_fraction)
    chars = corpus.char_vocabulary(text)  # all of it: a character first seen in the tail still gets an id
    train_words, valid_words = corpus.words(train_text), corpus.words(valid_text)
    if not train_words:
        raise StageError(
            f"{where}: the training part has no words (only spaces or punctuation?): the word model "
            "cannot be trained on it"
        )
    word_vocab = corpus.word_vocabulary(train_words, p.max_words, p.min_word_count)
    arrays = {
        "train_chars": corpus.encode_chars(train_text, chars),
        "valid_chars": corpus.encode_chars(valid_text, chars),
        "train_words": corpus.encode_words(train_words, word_vocab),
        "valid_words": corpus.encode_words(valid_words, word_vocab),
    }
    stats = {
        "bytes": len(data),
        "chars": len(text),
        **fixed,
        "char_vocab": len(chars),
        "word_vocab": len(word_vocab),
        **{f"n_{name}": int(len(a)) for name, a in arrays.items()},
        "valid_unknown_word_rate": float(np.mean(arrays["valid_words"] == 0)) if valid_words else 0.0,
    }
    return arrays, {"chars": chars, "words": word_vocab}, stats


def main() -> None:
    p = text_params.load().prepare
    arrays, vocab, stats = prepare(Path(CORPUS).read_bytes(), p, where=CORPUS)
    with atomic_dir(PREPARED) as out:
        for name, array in arrays.items():
            save_npy(out / f"{name}.npy", array)
        write_json(out / "vocab.json", vocab)
        write_json(out / "stats.json", stats)
    print(
        f"prepared {stats['chars']:,} characters ({stats['char_vocab']} distinct; "
        f"{stats['repaired_chars']} repaired, "
        f"{stats['replaced_bytes']} undecodable byte(s) replaced by {p.replacement!r}), "
        f"{stats['n_train_chars']:,} train / {stats['n_valid_chars']:,} valid; {stats['n_train_words']:,} + "
        f"{stats['n_valid_words']:,} words, vocabulary {stats['word_vocab']:,}"
    )


if __name__ == "__main__":
    run_stage(main)
