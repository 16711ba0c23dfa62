"""imdb_download: fetch the Large Movie Review Dataset archive, verified, and keep it packed.

imdb_tokenize reads the reviews straight from the archive: DVC then tracks one file, not 50,000
reviews (hashing those made every no-change `dvc repro` slow).
"""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch
from stages.imdb import params as imdb_params
from stages.imdb.paths import ARCHIVE


def main() -> None:
    fetch(imdb_params.load().source, ARCHIVE, record=TrustRecord("imdb"))


if __name__ == "__main__":
    run_stage(main)
