"""imdb_download: fetch the Large Movie Review Dataset and extract its labelled train/test reviews."""
from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import fetch_and_extract
from stages.imdb import params as imdb_params

RAW_DIR = "data/imdb/raw"
MEMBERS = ["aclImdb/train/pos", "aclImdb/train/neg", "aclImdb/test/pos", "aclImdb/test/neg"]


def main() -> None:
    fetch_and_extract(imdb_params.load().source, RAW_DIR, members=MEMBERS)


if __name__ == "__main__":
    run_stage(main)
