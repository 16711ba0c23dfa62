"""text_download: fetch the plain-text corpus (Nietzsche's Beyond Good and Evil by default)."""

from __future__ import annotations

from stages.common.cli import run_stage
from stages.common.download import TrustRecord, fetch
from stages.text import params as text_params
from stages.text.paths import CORPUS


def main() -> None:
    fetch(text_params.load().source, CORPUS, record=TrustRecord("text"))


if __name__ == "__main__":
    run_stage(main)
