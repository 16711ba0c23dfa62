"""dogscats_download: the pet photo archive (extracted) and the VGG16 ImageNet conv-base weights."""
from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import fetch, fetch_and_extract
from stages.dogscats import params as dogscats_params

RAW_DIR = "data/dogscats/raw"
WEIGHTS = "data/dogscats/weights/vgg16_notop.h5"


def main() -> None:
    p = dogscats_params.load()
    fetch_and_extract(p.sources.images, RAW_DIR, members=["PetImages"])
    fetch(p.sources.weights, WEIGHTS)


if __name__ == "__main__":
    run_stage(main)
