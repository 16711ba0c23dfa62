"""MovieLens as the pipeline sees it (stages/common/workload.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stages.common.workload import Work, Workload
from stages.movielens.params import MovieLensParams

# Ratings in each release (the mirror's 2016 ml-latest-small has 100,004, the URL's 2018 one these)
RATINGS = {"ml-latest-small": 100_836, "ml-100k": 100_000, "ml-1m": 1_000_209, "ml-25m": 25_000_095}


def work(stage: str, params: Mapping, root: Path) -> Work | None:
    """A model's training: its epochs over the training ratings, at the rate of a Keras CNN's training (`cnn`)."""
    name, _, item = stage.partition("@")
    if name != "movielens_train":
        return None
    m = params["movielens"]
    return Work("cnn", m["models"][item]["epochs"] * RATINGS[m["dataset"]] * (1 - m["prepare"]["valid_fraction"]))


WORKLOAD = Workload(
    name="movielens",
    description="collaborative filtering: dot product, dot + biases (the headline), neural net; biases and PCA",
    schema=MovieLensParams,
    headlines={"val_mse": False},
    work=work,
)
