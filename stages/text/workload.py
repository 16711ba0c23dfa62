"""The text models as the pipeline sees them (stages/common/workload.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stages.common.workload import Calibration, Work, Workload, measured_rate, read_if_there
from stages.text.params import TextParams

# Before text_prepare has run: the corpus' size (Nietzsche's), and words as characters over this
CORPUS_CHARS, CHARS_PER_WORD = 600_901, 5.5
VOCAB = 57  # Nietzsche's lowercased characters, about


def work(stage: str, params: Mapping, root: Path) -> Work | None:
    """A model's training: its epochs over the training characters (words for the word LSTM), at the char LSTM's
    rate (`lstm`)."""
    name, _, item = stage.partition("@")
    if name != "text_train":
        return None
    t = params["text"]
    stats = read_if_there(root / "data/text/prepared/stats.json")
    chars = stats.get("n_train_chars") or CORPUS_CHARS * (1 - t["prepare"]["valid_fraction"])
    model = t["models"][item]
    per_epoch = (stats.get("n_train_words") or chars / CHARS_PER_WORD) if model["kind"] == "word_lstm" else chars
    return Work("lstm", model["epochs"] * per_epoch)


def char_lstm_chars_per_s(p: TextParams) -> float:
    """Characters/s of a training step of the char LSTM (text.models.char_lstm) on random text."""
    import numpy as np

    from stages.text.models import build

    lstm = p.models["char_lstm"]
    model = build(lstm, VOCAB)
    model.compile("adam", "sparse_categorical_crossentropy")
    tokens = np.random.default_rng(0).integers(0, VOCAB, (lstm.batch_size, lstm.seq_len))
    return measured_rate(lambda: model.train_on_batch(tokens, tokens), lstm.batch_size * lstm.seq_len)


WORKLOAD = Workload(
    name="text",
    description="the 3-character merge model, unrolled RNN, char and word LSTMs on Nietzsche",
    schema=TextParams,
    headlines={"val_loss_per_char": False, "bits_per_char": False, "val_loss_per_word": False},
    work=work,
    calibrations={"lstm": Calibration("char LSTM", "chars/s", char_lstm_chars_per_s)},
)
