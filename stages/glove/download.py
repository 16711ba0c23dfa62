"""glove_download: fetch glove.6B.zip and extract the one file of the configured dimension."""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch_and_extract
from stages.glove import params as glove_params
from stages.glove.paths import MEMBER, RAW


def main() -> None:
    p = glove_params.load()
    fetch_and_extract(p.source, RAW, TrustRecord("glove"), members=[MEMBER.format(dim=p.dim)])


if __name__ == "__main__":
    run_stage(main)
