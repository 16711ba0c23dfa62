"""Pure text functions: robust decoding, vocabularies, word tokens and training sequences."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from stages.common.cli import StageError
from stages.common.io import load_npy, read_json
from stages.text.paths import PREPARED

UNKNOWN_WORD = "<unk>"
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # what 'surrogateescape' makes of undecodable bytes
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]'\"])")


def decode(data: bytes, errors: str = "repair", replacement: str = "\ufffd", where: str = "corpus") -> tuple[str, dict]:
    """UTF-8 text and counts of what was fixed.

    repair: a byte pair that becomes valid UTF-8 once its lead byte is moved back from the Latin-1 lowercase range
    (0xE0-0xFE -> 0xC0-0xDE) is decoded that way; this undoes a byte-wise Latin-1 `lower()` of UTF-8 text (Nietzsche's
    file: 'werthsch\\xe3\\xa4tzung' is 'werthschätzung'). Every other undecodable byte becomes `replacement`.
    replace: every undecodable byte becomes `replacement`. strict: the first undecodable byte is an error.
    """
    counts = {"repaired_chars": 0, "replaced_bytes": 0}
    try:
        return data.decode("utf-8"), counts
    except UnicodeDecodeError as err:
        if errors == "strict":
            line = data.count(b"\n", 0, err.start) + 1
            raise StageError(
                f"{where}: not valid UTF-8 at byte {err.start} (line {line}): "
                f"{data[max(0, err.start - 20) : err.end + 20]!r}. Fix the file, or set "
                "text.prepare.decode_errors to 'repair' or 'replace' in params.yaml"
            ) from None

    def fix(match: re.Match) -> str:
        raw = match.group().encode("utf-8", "surrogateescape")
        out, i = [], 0
        while i < len(raw):
            char = _unlowered(raw[i : i + 2]) if errors == "repair" else None
            if char:
                out.append(char)
                counts["repaired_chars"] += 1
                i += 2
            else:
                out.append(replacement)
                counts["replaced_bytes"] += 1
                i += 1
        return "".join(out)

    return _ESCAPED_BYTES.sub(fix, data.decode("utf-8", "surrogateescape")), counts


def _unlowered(pair: bytes) -> str | None:
    if len(pair) != 2 or not (0xE0 <= pair[0] <= 0xFE and pair[0] != 0xF7):
        return None
    try:
        return bytes([pair[0] - 0x20, pair[1]]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def split_tail(text: str, valid_fraction: float) -> tuple[str, str]:
    """(training head, held-out tail of `valid_fraction` of the characters); both must be non-empty."""
    n_valid = round(len(text) * valid_fraction)
    if len(text) < 2 or n_valid == 0 or n_valid == len(text):
        raise StageError(
            f"the corpus has {len(text)} character(s): too short to hold out {valid_fraction:.0%} for "
            "validation and keep the rest for training; use a longer corpus (text.source.url)"
        )
    return text[:-n_valid], text[-n_valid:]


def char_vocabulary(text: str) -> list[str]:
    return sorted(set(text))


def encode_chars(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))


def words(text: str) -> list[str]:
    """Word tokens: runs of letters/digits (with inner apostrophes) and single punctuation marks."""
    return _WORD.findall(text)


def word_vocabulary(tokens: list[str], max_words: int, min_count: int) -> list[str]:
    """<unk> first, then the most frequent words (ties alphabetical) seen at least `min_count` times."""
    counts = Counter(tokens)
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [UNKNOWN_WORD, *ranked[: max_words - 1]]


def encode_words(tokens: list[str], vocab: list[str]) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    return np.fromiter((index.get(w, 0) for w in tokens), dtype=np.int32, count=len(tokens))


def join_words(tokens: list[str]) -> str:
    return _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens))


def sequences(ids: np.ndarray, seq_len: int, stride: int, what: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """Windows of `seq_len` tokens every `stride` tokens, and the same windows shifted by one (the next tokens)."""
    if seq_len < 1 or stride < 1:
        raise StageError(
            f"sequence length and stride must be >= 1 (got seq_len={seq_len}, stride={stride}); "
            "fix text.models.<model> in params.yaml"
        )
    if len(ids) < seq_len + 1:
        raise StageError(
            f"{what} has {len(ids)} token(s), fewer than one sequence of seq_len={seq_len} plus its "
            f"next token needs ({seq_len + 1}); use a longer corpus, a smaller seq_len, or (for the "
            "validation tail) a larger text.prepare.valid_fraction"
        )
    windows = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::stride]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def load_tokens(word_level: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(training ids, validation ids, vocabulary) of the prepared corpus, at the character or word level."""
    unit = "words" if word_level else "chars"
    vocab = read_json(f"{PREPARED}/vocab.json")[unit]
    return load_npy(f"{PREPARED}/train_{unit}.npy"), load_npy(f"{PREPARED}/valid_{unit}.npy"), vocab
