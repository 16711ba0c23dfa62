"""Schema of the `glove` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.common.params import Schema, Source, load_params


class TsneParams(Schema):
    n_words: int = Field(ge=10, description="the most frequent GloVe words (the file is in frequency order)")
    n_labelled: int = Field(ge=1)
    perplexity: float = Field(gt=0)
    seed: int = Field(ge=0)


class GloveParams(Schema):
    source: Source
    # the widths glove.6B.zip holds: any other would only fail later, as a member missing from the archive
    dim: Literal[50, 100, 200, 300] = Field(description="glove.6B.<dim>d.txt inside the archive: 50, 100, 200 or 300")
    tsne: TsneParams


def load() -> GloveParams:
    return load_params("glove", GloveParams)
