"""movielens_download: fetch the selected MovieLens variant and extract its ratings and movies files."""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch_and_extract
from stages.movielens import params as movielens_params
from stages.movielens.data import archive_members
from stages.movielens.paths import RAW


def main() -> None:
    p = movielens_params.load()
    fetch_and_extract(p.sources[p.dataset], RAW, TrustRecord("movielens"), members=archive_members(p.dataset))


if __name__ == "__main__":
    run_stage(main)
