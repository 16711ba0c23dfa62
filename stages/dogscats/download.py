"""dogscats_download: the pet photo archive, verified and kept packed, and the VGG16 ImageNet conv-base weights.

dogscats_prepare reads the photos straight from the archive: DVC then tracks one file, not 25,000
photos (hashing those made every no-change `dvc repro` slow).
"""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch
from stages.dogscats import params as dogscats_params
from stages.dogscats.paths import ARCHIVE, WEIGHTS


def main() -> None:
    p = dogscats_params.load()
    record = TrustRecord("dogscats")
    fetch(p.sources.images, ARCHIVE, record=record)
    fetch(p.sources.weights, WEIGHTS, record=record)


if __name__ == "__main__":
    run_stage(main)
