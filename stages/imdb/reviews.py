"""Reading the labelled reviews straight from the aclImdb archive (imdb_tokenize, and NB-SVM, which reads text)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from stages.common.archive import read_members
from stages.common.cli import StageError

LABELS = {"neg": 0, "pos": 1}
REVIEW = re.compile(r"aclImdb/(?:train|test)/(?:neg|pos)/[^/]+\.txt")
SEPARATOR = "\x00"  # imdb_tokenize joins all reviews with it, so that standardising runs once over one string


Reviews = tuple[list[str], np.ndarray, list[str]]  # texts, labels 0/1, descriptions of skipped files


def read_reviews(archive: str | Path) -> dict[str, Reviews]:
    """{"train": ..., "test": ...} from the archive's `aclImdb/<split>/{neg,pos}/*.txt`, neg then pos, by name.

    Empty and non-UTF-8 reviews are skipped, counted and reported; a split without both classes is an error.
    """
    by_folder: dict[tuple[str, str], list[tuple[str, bytes]]] = defaultdict(list)
    members = read_members(archive, lambda name: REVIEW.fullmatch(name) is not None)
    for name, blob in tqdm(members, desc="read reviews", unit="review", mininterval=5.0):
        _, split, label, _ = name.split("/")  # aclImdb/<split>/<label>/<file>, as REVIEW matched
        by_folder[split, label].append((name, blob))
    result = {}
    for split in ("train", "test"):
        texts, labels, skipped = [], [], []
        for name, label in LABELS.items():
            found = sorted(by_folder[split, name], key=lambda member: member[0])
            if not found:
                raise StageError(
                    f"{archive}: no aclImdb/{split}/{name}/*.txt reviews; the archive must hold "
                    "aclImdb/{train,test}/{neg,pos} (re-run imdb_download, or check imdb.source in "
                    "params.yaml)"
                )
            for member, blob in found:
                try:
                    text = blob.decode("utf-8")
                except UnicodeDecodeError as err:
                    skipped.append(f"{member}: not valid UTF-8 ({err.reason} at byte {err.start})")
                    continue
                if not text.strip():
                    skipped.append(f"{member}: empty review")
                    continue
                texts.append(text.replace(SEPARATOR, " "))
                labels.append(label)
        if not texts:
            raise StageError(f"{archive}: no readable reviews in aclImdb/{split}/neg and aclImdb/{split}/pos")
        result[split] = texts, np.asarray(labels, dtype="int8"), skipped
    return result
