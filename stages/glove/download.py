"""glove_download: fetch glove.6B.zip and extract the one file of the configured dimension."""
from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch_and_extract
from stages.glove import params as glove_params

RAW_DIR = "data/glove/raw"


def vectors_file(dim: int) -> str:
    return f"glove.6B.{dim}d.txt"


def main() -> None:
    p = glove_params.load()
    fetch_and_extract(p.source, RAW_DIR, TrustRecord("glove"), members=[vectors_file(p.dim)])


if __name__ == "__main__":
    run_stage(main)
