"""IMDB as the pipeline sees it (stages/common/workload.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stages.common.workload import Calibration, Work, Workload, measured_rate
from stages.imdb.params import ImdbParams

TRAIN_REVIEWS = 25_000


def work(stage: str, params: Mapping, root: Path) -> Work | None:
    """A Keras model's training: its phases' epochs over the training reviews (`cnn`); NB-SVM is a fixed cost."""
    name, _, item = stage.partition("@")
    if name != "imdb_train":
        return None
    imdb = params["imdb"]
    epochs = sum(phase["epochs"] for phase in imdb["models"][item]["phases"])
    return Work("cnn", epochs * TRAIN_REVIEWS * (1 - imdb["tokenize"]["valid_fraction"]))


def cnn_reviews_per_s(p: ImdbParams) -> float:
    """Reviews/s of a training step of the 1-D CNN (imdb.models.cnn) on random reviews."""
    import numpy as np

    from stages.imdb.models import build

    cnn, vocab, maxlen = p.models["cnn"], p.tokenize.vocab_size, p.tokenize.maxlen
    model = build(cnn, vocab, maxlen)
    model.compile("adam", "binary_crossentropy")
    rng = np.random.default_rng(0)
    reviews, labels = rng.integers(0, vocab, (cnn.batch_size, maxlen)), rng.integers(0, 2, cnn.batch_size)
    return measured_rate(lambda: model.train_on_batch(reviews, labels), cnn.batch_size)


WORKLOAD = Workload(
    name="imdb",
    description="sentiment: single hidden layer, 1-D CNN, GloVe CNN, multi-size CNN, LSTM, NB-SVM",
    schema=ImdbParams,
    headlines={"val_accuracy": True, "test_accuracy": True},
    work=work,
    calibrations={"cnn": Calibration("IMDB CNN", "reviews/s", cnn_reviews_per_s)},
)
