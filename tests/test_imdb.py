"""IMDB + GloVe: pure steps on tiny generated data, real Keras, bad input, and the real `dvc repro` chain."""

from __future__ import annotations

import ast
import json
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from stages.common.archive import CorruptArchiveError
from stages.common.cli import StageError
from stages.common.params import ParamsError, read_params_file, validate_section
from stages.common.word_vectors import read_glove
from stages.glove.params import GloveParams
from stages.imdb.glove_matrix import embedding_matrix
from stages.imdb.params import GloveMatrixParams, ImdbParams, ModelParams, TokenizeParams
from stages.imdb.reviews import read_reviews
from stages.imdb.sequences import repad
from stages.imdb.tokenize import build_vocab, encode, stratified_valid_mask, tokenize, words
from tests.conftest import REPO, kill_when_backed_up, stage_runs_by_status
from tests.factories.docs import code_blocks
from tests.factories.imdb import glove_archive, glove_text, imdb_archive


def write_archive(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


# ------------------------------------------------------------------ tokenize


def test_words_strip_markup_and_punctuation_like_keras_textvectorization():
    from benchmarks.imdb import keras_tokenize

    texts = ["This movie was GREAT!<br /><br />Don't miss it... 10/10", "Awful, awful film;<br/>a WASTE-of-time."]
    assert words(texts) == [
        ["this", "movie", "was", "great", "dont", "miss", "it", "1010"],
        ["awful", "awful", "film", "a", "wasteoftime"],
    ]
    vocab, train_ids, _ = keras_tokenize(texts, texts[:1], vocab_size=14)  # all 12 distinct words
    assert set(vocab) == {w for w, _ in build_vocab(words(texts), 14)}
    index = {w: i for i, w in enumerate(vocab, start=1)}
    assert [list(r) for r in train_ids] == [[index[w] for w in review] for review in words(texts)]


def test_keras_style_keeps_apostrophes_inside_words_and_a_br_word_per_line_break():
    texts = [
        "This movie was GREAT!<br /><br />Don't miss it... 10/10",
        "'Awful' film,<br/>the boys' boy's WASTE-of-time.",
    ]
    assert words(texts, "keras") == [
        ["this", "movie", "was", "great", "br", "br", "don't", "miss", "it", "1010"],
        ["awful", "film", "br", "the", "boys", "boy's", "wasteoftime"],
    ]
    with pytest.raises(KeyError):  # an unknown style is refused, not read as plain
        words(texts, "spacy")
    p = TokenizeParams(
        style="keras", vocab_size=17, maxlen=8, padding="pre", truncating="pre", valid_fraction=0.1, seed=0
    )
    _, vocab, _ = tokenize(texts, texts, p)  # the stage's step honours the param
    assert ("br", 3) in vocab and ("don't", 1) in vocab and len(vocab) == 15


def test_benchmark_model_options_take_all_none_or_names_and_refuse_an_unknown_name():
    from benchmarks.imdb import selected

    every = ImdbParams.model_validate(read_params_file(REPO / "params.yaml")["imdb"]).models
    models = {name: every[name] for name in ("single", "cnn", "lstm")}  # NB-SVM (imdb.nbsvm) has an option of its own
    assert selected(models, "all") == models and selected(models, "none") == {}
    assert selected(models, "lstm,cnn") == {"lstm": models["lstm"], "cnn": models["cnn"]}
    with pytest.raises(SystemExit, match="no model multi under imdb.models in params.yaml .single, cnn, lstm."):
        selected(models, "cnn,multi")


def test_benchmark_ensembles_average_the_probabilities_of_consecutive_models_and_drop_a_remainder():
    from benchmarks.imdb import ensemble_accuracies

    labels = np.array([1, 1, 0, 0])
    models = [
        np.array([0.9, 0.4, 0.2, 0.1]),
        np.array([0.8, 0.7, 0.6, 0.2]),  # each 3/4 right, together 4/4
        np.array([0.2, 0.2, 0.9, 0.9]),
        np.array([0.4, 0.9, 0.7, 0.3]),  # 0/4 and 2/4, together 1/4
        np.array([1.0, 1.0, 0.0, 0.0]),
    ]  # a remainder: not scored
    assert ensemble_accuracies(models, labels, 2) == [1.0, 0.25]
    assert ensemble_accuracies(models, labels, 1) == [0.75, 0.75, 0.0, 0.5, 1.0]


def test_vocabulary_ranks_by_frequency_and_reserves_padding_and_rare_ids():
    tokenized = [["b", "a", "a", "c"], ["a", "b", "d"], ["e"]]
    vocab = build_vocab(tokenized, vocab_size=4)  # ids: 0 pad, 1 'a', 2 'b', 3 rare
    assert vocab == [("a", 3), ("b", 2)]
    names = [w for w, _ in vocab]
    pre = encode(tokenized, names, maxlen=3)
    assert pre.dtype == np.int32
    assert pre.tolist() == [[1, 1, 3], [1, 2, 3], [0, 0, 3]]  # pre-truncation keeps the last tokens
    post = encode(tokenized, names, maxlen=3, padding="post", truncating="post")
    assert post.tolist() == [[2, 1, 1], [1, 2, 3], [3, 0, 0]]
    assert repad(pre, 2, "pre", "pre").tolist() == [[1, 3], [2, 3], [0, 3]]


def test_vocab_size_larger_than_the_distinct_words_is_a_clear_error():
    with pytest.raises(
        StageError, match=r"vocab_size = 10 but the training reviews have only 3 distinct words.*at most 5"
    ):
        build_vocab([["a", "b"], ["c"]], vocab_size=10)


@pytest.mark.parametrize("maxlen", [0, -5])
def test_maxlen_not_positive_is_rejected_before_any_work(maxlen):
    raw = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")["imdb"]
    raw = {**raw, "tokenize": {**raw["tokenize"], "maxlen": maxlen}}
    with pytest.raises(ParamsError, match=r"imdb\.tokenize\.maxlen = -?\d+: Input should be greater than 0"):
        validate_section("imdb", raw, ImdbParams)
    with pytest.raises(StageError, match="maxlen must be > 0"):
        encode([["a"]], ["a"], maxlen=maxlen)


def test_reviews_are_read_from_the_archive_and_empty_and_non_utf8_ones_are_counted_skips(tmp_path):
    archive = write_archive(
        tmp_path / "a.tar.gz",
        imdb_archive(
            3,
            extra={
                "aclImdb/train/pos/90_10.txt": b"  \n",
                "aclImdb/train/neg/91_1.txt": b"caf\xe9 was \xff awful",
                "aclImdb/train/unsup/5_0.txt": b"unlabelled: not read",
            },
        ),
    )
    reviews = read_reviews(archive)
    texts, labels, skipped = reviews["train"]
    assert len(texts) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert texts[0] == imdb_archive_review(archive, "aclImdb/train/neg/0_2.txt")
    assert len(skipped) == 2
    assert any("aclImdb/train/neg/91_1.txt: not valid UTF-8" in s for s in skipped)
    assert any("aclImdb/train/pos/90_10.txt: empty review" in s for s in skipped)
    assert len(reviews["test"][0]) == 6 and reviews["test"][2] == []


def imdb_archive_review(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read().decode()


def test_missing_class_folder_is_a_clear_error(tmp_path):
    archive = write_archive(tmp_path / "a.tar.gz", imdb_archive(2, without="aclImdb/test/pos"))
    with pytest.raises(StageError, match=r"no aclImdb/test/pos/\*\.txt reviews.*re-run imdb_download"):
        read_reviews(archive)


def test_a_damaged_review_archive_is_a_clear_error(tmp_path):
    blob = imdb_archive(20)
    archive = write_archive(tmp_path / "a.tar.gz", blob[: len(blob) // 2])
    with pytest.raises(CorruptArchiveError, match="a.tar.gz: damaged archive.*download it again"):
        read_reviews(archive)


def test_validation_split_is_stratified_and_seeded():
    labels = np.array([0] * 300 + [1] * 100)
    mask = stratified_valid_mask(labels, 0.1, seed=7)
    assert mask[labels == 0].sum() == 30 and mask[labels == 1].sum() == 10
    assert (mask == stratified_valid_mask(labels, 0.1, seed=7)).all()
    assert not (mask == stratified_valid_mask(labels, 0.1, seed=8)).all()


# ------------------------------------------------------------------ GloVe


def test_glove_line_with_wrong_number_of_floats_names_the_line(tmp_path):
    lines = glove_text(dim=5).splitlines(keepends=True)
    lines[3] = lines[3].rsplit(" ", 1)[0] + "\n"  # 4 floats instead of 5
    path = tmp_path / "glove.6B.5d.txt"
    path.write_text("".join(lines))
    with pytest.raises(StageError, match=r"glove.6B.5d.txt, line 4: expected a word and 5 floats, got 4"):
        read_glove(path, 5)
    with pytest.raises(StageError, match=r"line 4: expected a word and 5 floats, got 4.*\(line 1 holds that many\)"):
        read_glove(path, None)  # imdb_glove_matrix's call: as wide as the first line
    words_, vectors = read_glove(path, 5, limit=3)  # the lines before it are fine
    assert words_ == ["the", ",", "."] and vectors.shape == (3, 5)


@pytest.mark.parametrize("value", ["nan", "inf", "-1e39"])
def test_glove_value_that_is_not_a_finite_float32_names_the_line(tmp_path, value):
    lines = glove_text(dim=5).splitlines(keepends=True)
    word, *floats = lines[2].split(" ")
    lines[2] = " ".join([word, value, *floats[1:]])
    path = tmp_path / "glove.6B.5d.txt"
    path.write_text("".join(lines))
    with pytest.raises(StageError, match=r"glove.6B.5d.txt, line 3: '\.' has a value that is nan, inf or beyond"):
        read_glove(path, 5)


@pytest.mark.parametrize("dim", [64, 25, "100", 0])
def test_glove_dim_other_than_the_archives_four_widths_is_rejected_before_any_work(dim):
    section = read_params_file(Path(__file__).resolve().parents[1] / "params.yaml")["glove"]
    with pytest.raises(ParamsError, match=rf"glove\.dim = {dim!r}: Input should be 50, 100, 200 or 300"):
        validate_section("glove", {**section, "dim": dim}, GloveParams)
    for width in (50, 100, 200, 300):  # the members glove.6B.zip holds
        assert validate_section("glove", {**section, "dim": width}, GloveParams).dim == width


def test_embedding_matrix_follows_the_fastai_recipe():
    glove_words = ["good", "bad", "film"]
    glove_vectors = np.arange(15, dtype="float32").reshape(3, 5)
    vocab = ["film", "good"] + [f"unseen{i}" for i in range(4000)]
    matrix, found = embedding_matrix(
        vocab, glove_words, glove_vectors, GloveMatrixParams(oov_scale=0.6, divide_by=3, seed=1)
    )
    assert matrix.shape == (len(vocab) + 2, 5)
    assert (matrix[0] == 0).all()  # padding
    np.testing.assert_allclose(matrix[1], glove_vectors[2] / 3)
    np.testing.assert_allclose(matrix[2], glove_vectors[0] / 3)
    assert found.tolist()[:4] == [False, True, True, False]
    assert matrix[3:].std() == pytest.approx(0.6 / 3, rel=0.05)  # missing words and the rare row: normal(0.6) / 3


# ------------------------------------------------------------------ models


def model_params(**overrides) -> ModelParams:
    base = {
        "kind": "cnn",
        "embedding": "learned",
        "embedding_dim": 8,
        "filters": 4,
        "kernel_sizes": [3],
        "hidden": 8,
        "batch_size": 16,
        "phases": [{"epochs": 1, "learning_rate": 0.01}],
        "seed": 3,
    }
    return ModelParams.model_validate({**base, **overrides})


def toy_data(n: int = 96, maxlen: int = 12, vocab_size: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("float32")
    x = rng.integers(3, vocab_size, (n, maxlen)).astype("int32")
    x[:, -1] = np.where(y == 1, 1, 2)  # the sentiment word
    return (x[: n * 3 // 4], y[: n * 3 // 4]), (x[n * 3 // 4 :], y[n * 3 // 4 :])


@pytest.mark.parametrize(
    "overrides",
    [
        {"kind": "dense"},
        {"kind": "cnn", "word_dropout": 0.2, "embedding_dropout": 0.2, "conv_dropout": 0.2},
        {"kind": "cnn", "kernel_sizes": [2, 3, 4], "embedding": "glove"},
        {"kind": "lstm", "lstm_units": 4, "embedding_l2": 1e-6},
    ],
    ids=["dense", "cnn", "multi_cnn_glove", "lstm"],
)
def test_every_model_kind_trains_saves_and_loads(tmp_path, overrides):
    from stages.common.io import load_keras, save_keras
    from stages.imdb.train import train

    glove = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    train_data, valid_data = toy_data()
    p = model_params(**overrides)
    model, history, summary = train(train_data, valid_data, p, 20, glove, verbose=0)
    assert summary["epochs"] == 1 and summary["train_reviews_per_s"] > 0
    if p.embedding == "glove":
        assert model.get_layer("embedding").trainable
    save_keras(tmp_path / "m.keras", model)
    loaded = load_keras(tmp_path / "m.keras")
    np.testing.assert_allclose(
        loaded.predict(valid_data[0], verbose=0), model.predict(valid_data[0], verbose=0), rtol=1e-5, atol=1e-6
    )


def test_word_dropout_drops_whole_words_only_while_training():
    from stages.imdb.models import WordDropoutEmbedding

    layer = WordDropoutEmbedding(50, 4, word_dropout=0.5, seed=1, embeddings_initializer="ones")
    ids = np.tile(np.arange(1, 50, dtype="int32"), (2, 1))  # every word twice, in two rows
    out = np.asarray(layer(ids, training=True))
    kept = out[..., 0] != 0
    assert (kept[0] == kept[1]).all()  # a dropped word is dropped everywhere in the batch
    assert 10 < kept[0].sum() < 40
    np.testing.assert_allclose(out[kept], 2.0)  # survivors scaled by 1 / (1 - 0.5)
    assert (np.asarray(layer(ids, training=False)) == 1).all()


def test_glove_matrix_of_the_wrong_shape_is_a_clear_error():
    from stages.imdb.train import train

    train_data, valid_data = toy_data()
    with pytest.raises(StageError, match=r"needs a 20 x 8 matrix, got \(20, 50\)"):
        train(train_data, valid_data, model_params(embedding="glove"), 20, np.zeros((20, 50), "float32"), verbose=0)


def test_phase_change_freeze_then_unfreeze_at_a_new_rate_really_takes_effect():
    """Phase 1: embedding frozen at lr 1e-3; phase 2: embedding trained at lr 1e-4.

    Adam's first step moves each dense weight by about the learning rate, so the size of the
    hidden layer's first update in each phase shows which rate the optimizer really used.
    """
    import keras

    from stages.imdb.train import train

    glove = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    p = model_params(
        embedding="glove",
        phases=[
            {"epochs": 2, "learning_rate": 1e-3, "train_embedding": False},
            {"epochs": 1, "learning_rate": 1e-4, "train_embedding": True},
        ],
    )
    snapshots = []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            snapshots.append(("begin", self._weights()))

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                snapshots.append(("first_batch", self._weights()))

        def on_train_end(self, logs=None):
            snapshots.append(("end", self._weights()))

        def _weights(self):
            return (
                self.model.get_layer("embedding").get_weights()[0].copy(),
                self.model.get_layer("hidden").get_weights()[0].copy(),
                float(self.model.optimizer.learning_rate.numpy()),
            )

    train_data, valid_data = toy_data()
    _, history, _ = train(train_data, valid_data, p, 20, glove, extra_callbacks=[Watch()], verbose=0)
    kinds = [k for k, _ in snapshots]
    assert kinds == ["begin", "first_batch", "first_batch", "end", "begin", "first_batch", "end"]
    (_, (emb0, hid0, lr0)), (_, (_, hid1, _)) = snapshots[0], snapshots[1]
    (_, (emb_frozen_end, _, _)) = snapshots[3]
    (_, (emb2, hid2, lr2)), (_, (emb3, hid3, _)) = snapshots[4], snapshots[5]

    np.testing.assert_array_equal(emb0, glove)  # initialised from GloVe
    np.testing.assert_array_equal(emb_frozen_end, glove)  # frozen: untouched through phase 1
    assert lr0 == pytest.approx(1e-3) and np.abs(hid1 - hid0).max() == pytest.approx(1e-3, rel=0.05)
    assert lr2 == pytest.approx(1e-4)
    assert np.abs(hid3 - hid2).max() == pytest.approx(1e-4, rel=0.05)  # the new rate
    assert np.abs(emb3 - emb2).max() > 0  # unfrozen (its sparse, repeated-row step is not exactly lr)
    assert history["learning_rate"] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert history["embedding_trainable"] == [0.0, 0.0, 1.0]
    assert history["phase"] == [1, 1, 2]


def test_a_model_whose_relu_units_all_died_is_refused_with_a_clear_error():
    import keras

    from stages.imdb.train import refit, train

    class KillHiddenUnits(keras.callbacks.Callback):  # what seed 48 of multi_cnn did to itself in its first epoch
        def on_train_begin(self, logs=None):
            kernel, bias = self.model.get_layer("hidden").get_weights()
            self.model.get_layer("hidden").set_weights([np.zeros_like(kernel), np.full_like(bias, -100.0)])

    train_data, valid_data = toy_data()
    with pytest.raises(
        StageError,
        match=r"the cnn model \(seed 3\) did not learn: it scores every validation review "
        r"0\.\d{4} \(e\.g\. all its ReLU units died",
    ):
        train(train_data, valid_data, model_params(), 20, extra_callbacks=[KillHiddenUnits()], verbose=0)
    with pytest.raises(StageError, match="did not learn"):  # the refit on every training review is checked too
        refit(train_data, valid_data, model_params(), 1, 20, extra_callbacks=[KillHiddenUnits()], verbose=0)
    model, _, _ = train(train_data, valid_data, model_params(), 20, verbose=0)  # the same model alive: accepted
    assert np.ptp(model.predict(valid_data[0], verbose=0)) > 0


def test_best_validation_epoch_is_kept_across_phases():
    import keras

    from stages.imdb.train import train

    ends = []

    class Remember(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(self.model.get_weights())

    train_data, valid_data = toy_data()
    p = model_params(phases=[{"epochs": 2, "learning_rate": 0.01}, {"epochs": 2, "learning_rate": 0.5}])
    model, history, summary = train(train_data, valid_data, p, 20, extra_callbacks=[Remember()], verbose=0)
    best = int(np.argmax(history["val_accuracy"]))
    assert summary["best_epoch"] == best + 1
    for kept, remembered in zip(model.get_weights(), ends[best]):
        np.testing.assert_array_equal(kept, remembered)


def test_refit_trains_again_on_every_review_through_the_chosen_epoch_of_the_phases():
    """Chosen epoch 3 of [2 frozen at 1e-3, 2 trained at 1e-4]: the refit runs 2 frozen epochs, then 1 at 1e-4,
    on training and validation reviews together, from the same seed, and keeps its last weights."""
    import keras

    from stages.imdb.train import refit, train

    glove = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    p = model_params(
        embedding="glove",
        phases=[
            {"epochs": 2, "learning_rate": 1e-3, "train_embedding": False},
            {"epochs": 2, "learning_rate": 1e-4, "train_embedding": True},
        ],
    )
    train_data, valid_data = toy_data()
    seen, logs, last = [], [], []

    class Watch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params["steps"])

        def on_epoch_end(self, epoch, epoch_logs=None):
            logs.append(dict(epoch_logs))
            last[:] = [self.model.get_weights()]

    model, summary = refit(train_data, valid_data, p, 3, 20, glove, extra_callbacks=[Watch()], verbose=0)
    assert (summary["refit_reviews"], summary["refit_epochs"]) == (96, 3) and summary["refit_seconds"] > 0
    assert seen == [96 // 16, 96 // 16]  # every review, batch 16, in both phases
    assert [row["learning_rate"] for row in logs] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert [row["embedding_trainable"] for row in logs] == [0.0, 0.0, 1.0]
    assert not any("val_accuracy" in row for row in logs)  # nothing left to choose with
    for kept, remembered in zip(model.get_weights(), last[0]):
        np.testing.assert_array_equal(kept, remembered)

    def initial_hidden_weights(fit):
        captured = []

        class Capture(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if not captured:
                    captured.append(self.model.get_layer("hidden").get_weights()[0].copy())

        fit([Capture()])
        return captured[0]

    # the same seed: the refit starts from the selection run's initial weights
    np.testing.assert_array_equal(
        initial_hidden_weights(lambda cb: train(train_data, valid_data, p, 20, glove, extra_callbacks=cb, verbose=0)),
        initial_hidden_weights(
            lambda cb: refit(train_data, valid_data, p, 1, 20, glove, extra_callbacks=cb, verbose=0)
        ),
    )


# ------------------------------------------------------------------ evaluate and embeddings


def test_evaluation_metrics_on_known_predictions():
    from stages.imdb.evaluate import evaluate

    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.8, 0.4, 0.9])
    metrics, roc, matrix = evaluate(probabilities, labels)
    assert metrics["test_accuracy"] == pytest.approx(0.6)
    assert metrics["test_roc_auc"] == pytest.approx(5 / 6)
    assert metrics["confusion_matrix"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert matrix.tolist() == [[1, 1], [1, 2]]
    assert roc["fpr"].iloc[-1] == 1 and roc["tpr"].iloc[-1] == 1


def test_nearest_neighbours_skip_padding_rare_and_unknown_probes():
    from stages.imdb.embeddings import nearest_neighbours

    vocab = ["good", "great", "bad", "awful"]
    matrix = np.array([[0, 0], [1, 0.1], [1, 0.2], [-1, 0], [-1, -0.1], [1, 0.15]], dtype="float32")
    usable = np.array([False, True, True, True, True, False])
    table, missing = nearest_neighbours(matrix, vocab, usable, ["good", "bad", "nonexistent"], 2, "test")
    assert missing == ["nonexistent"]
    assert table[table.probe == "good"]["word"].tolist() == ["great", "bad"]  # not itself, not the rare row
    assert table[table.probe == "bad"]["word"].tolist()[0] == "awful"


# ------------------------------------------------------------------ the real DVC chain

TINY_NBSVM = {"ngram_max": 2, "max_features": None, "C": [0.1, 1.0], "refit": True, "seed": 0}
TINY_MODELS = {
    "single": {
        "kind": "dense",
        "embedding": "learned",
        "embedding_dim": 8,
        "hidden": 8,
        "batch_size": 32,
        "phases": [{"epochs": 1, "learning_rate": 0.01}],
        "seed": 1,
    },
    "glove_cnn": {
        "kind": "cnn",
        "embedding": "glove",
        "embedding_dim": 50,
        "word_dropout": 0.2,
        "filters": 4,
        "kernel_sizes": [3],
        "hidden": 8,
        "batch_size": 32,
        "seed": 1,
        "refit": True,
        "phases": [
            {"epochs": 1, "learning_rate": 0.01, "train_embedding": False},
            {"epochs": 1, "learning_rate": 0.001, "train_embedding": True},
        ],
    },
}


@pytest.mark.slow
def test_dvc_chain_runs_end_to_end_and_a_model_change_invalidates_only_that_model(project, http_server, monkeypatch):
    imdb_url, imdb_sha = http_server.add("aclImdb_v1.tar.gz", imdb_archive(40))
    glove_url, glove_sha = http_server.add("glove.6B.zip", glove_archive())
    project.set_params(
        {
            "imdb.source": {"url": imdb_url, "sha256": imdb_sha},
            "glove.source": {"url": glove_url, "sha256": glove_sha},
            "imdb.tokenize.vocab_size": 27,
            "imdb.tokenize.maxlen": 24,
            "imdb.models": TINY_MODELS,
            "imdb.nbsvm": TINY_NBSVM,
            "imdb.fastai_test_accuracy": {"single": 0.8694, "glove_cnn": 0.9008},
            "imdb.embeddings.n_words": 15,
            "imdb.embeddings.n_labelled": 10,
            "imdb.embeddings.perplexity": 4,
            "imdb.embeddings.probes": ["great", "awful", "nonexistent"],
            "imdb.embeddings.n_neighbours": 3,
            "glove.tsne.n_words": 20,
            "glove.tsne.n_labelled": 10,
            "glove.tsne.perplexity": 5,
            "imdb.ngrams.n": 5,
        }
    )
    targets = ["imdb_compare", "imdb_embeddings", "imdb_ngrams", "glove_tsne"]
    project.dvc("repro", *targets)
    root = project.root
    stats = json.loads((root / "data/imdb/tokenized/stats.json").read_text())
    assert stats["n_train"] == 72 and stats["n_valid"] == 8 and stats["n_test"] == 80
    assert load(root / "data/imdb/tokenized/train_x.npy").shape == (80, 24)
    coverage = json.loads((root / "data/imdb/glove/coverage.json").read_text())
    assert "dull" in coverage["missing_examples"]
    table = pd.read_csv(root / "data/imdb/comparison/comparison.csv")
    assert table["model"].tolist() == ["single", "glove_cnn", "nbsvm"]
    assert table["fastai_2017_accuracy"].tolist()[:2] == [0.8694, 0.9008]
    assert table["seeds_mean"].tolist()[:2] == [86.55, 88.77]  # from the committed benchmark records
    nbsvm = json.loads((root / "data/imdb/metrics/nbsvm.json").read_text())
    assert sum(nbsvm["confusion_matrix"].values()) == 80 and nbsvm["test_accuracy"] > 0.9  # read the raw test text
    ngrams = pd.read_csv(root / "data/imdb/ngrams/ngrams.csv")
    assert len(ngrams) == 2 * 5 and set(ngrams["sentiment"]) == {"positive", "negative"}
    assert table["test_accuracy"].between(0, 1).all()
    metrics = json.loads((root / "data/imdb/metrics/glove_cnn.json").read_text())
    assert sum(metrics["confusion_matrix"].values()) == 80
    assert len(pd.read_csv(root / "data/imdb/eval/single_predictions.csv")) == 80
    assert len(pd.read_csv(root / "data/glove/tsne/glove_tsne.csv")) == 20
    assert (root / "data/glove/tsne/glove_tsne.png").stat().st_size > 0
    neighbours = pd.read_csv(root / "data/imdb/embeddings/neighbours.csv")
    val = {
        m: json.loads((root / f"data/imdb/metrics/train_{m}.json").read_text())["best_val_accuracy"]
        for m in TINY_MODELS  # NB-SVM has no embedding: never chosen
    }
    assert set(neighbours["embedding"]) == {"glove", f"learned:{max(val, key=val.get)}"}  # auto: best on validation
    assert set(neighbours["probe"]) == {"great", "awful"}
    history = pd.read_csv(root / "data/imdb/history/glove_cnn.csv")
    assert history["learning_rate"].tolist() == pytest.approx([0.01, 0.001])
    trained = json.loads((root / "data/imdb/metrics/train_glove_cnn.json").read_text())
    assert trained["refit_reviews"] == 80 and trained["refit_epochs"] == trained["best_epoch"]  # train + valid
    shown = project.dvc("plots", "show", "--json").stdout
    assert "single_roc.csv" in shown and "single_predictions.csv" in shown

    # the champion: the best model on validation, registered with its test figures; it scores raw reviews as the
    # pyfunc model that `mlflow models serve` loads (a champion served over HTTP: tests/test_movielens_pipeline.py)
    val["nbsvm"] = json.loads((root / "data/imdb/metrics/train_nbsvm.json").read_text())["best_val_accuracy"]
    client = mlflow.MlflowClient(project.env["MLFLOW_TRACKING_URI"])
    champion = client.get_model_version_by_alias("lesson5-imdb", "champion")
    assert float(champion.tags["validation.val_accuracy"]) == max(val.values())
    assert val[champion.tags["model"]] == max(val.values())
    tested = json.loads((root / f"data/imdb/metrics/{champion.tags['model']}.json").read_text())["test_accuracy"]
    assert float(champion.tags["test.accuracy"]) == pytest.approx(tested)
    scores = np.ravel(readme_predictions(project.env["MLFLOW_TRACKING_URI"], monkeypatch))  # by the alias
    assert len(scores) == 1 and 0 <= float(scores[0]) <= 1

    # one row per model: its curves, validation and test figures under the same names, with its training data
    experiment = client.get_experiment_by_name("lesson5-imdb")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    trainings = {m: runs["imdb_nbsvm_train" if m == "nbsvm" else f"imdb_train@{m}"] for m in val}
    names = {m: set(run.data.metrics) for m, run in trainings.items()}
    assert names["single"] == {k for k in names["glove_cnn"] if not k.startswith("refit_")}  # glove_cnn refits
    headline = {"val_accuracy", "val_loss", "test_accuracy", "test_roc_auc", "test_log_loss", "best_epoch", "epochs"}
    assert all(headline <= n for n in names.values())
    assert not [k for k in set().union(*names.values()) if k.startswith(("best_val", "final_")) or "cnn" in k]
    assert runs["imdb_train@single"].data.metrics["val_accuracy"] == val["single"]  # the chosen epoch's
    assert not runs["imdb_compare"].data.metrics  # the models' figures live on their own rows
    for model in val:
        trained = trainings[model].info.run_id
        assert {"plots/confusion.png", "plots/roc.png"} <= {a.path for a in client.list_artifacts(trained, "plots")}
        (dataset,) = client.get_run(trained).inputs.dataset_inputs
        assert dataset.dataset.name == ("imdb-train-reviews" if model == "nbsvm" else "imdb-train")

    # the GloVe matrix changed: the Keras models rerun (one foreach: its GloVe-fed models and, sharing their deps,
    # the others) and the embeddings' neighbours, never NB-SVM, which reads the reviews' text
    nbsvm_stages = ["imdb_nbsvm_train", "imdb_nbsvm_evaluate", "imdb_ngrams"]

    def changed_stages() -> list[str]:
        status = project.dvc("status", "--json", "--with-deps", *targets, *nbsvm_stages).stdout
        return sorted(json.loads(status))

    divide_by = project.params["imdb"]["glove_matrix"]["divide_by"]
    project.set_params({"imdb.glove_matrix.divide_by": divide_by * 2})
    assert changed_stages() == ["imdb_glove_matrix"]
    project.dvc("repro", "--single-item", "imdb_glove_matrix")
    assert changed_stages() == ["imdb_embeddings", "imdb_train@glove_cnn", "imdb_train@single"]
    project.set_params({"imdb.glove_matrix.divide_by": divide_by})
    project.dvc("repro", "--single-item", "imdb_glove_matrix")  # the same matrix again: all up to date
    assert changed_stages() == []

    project.set_params({"imdb.models.single.hidden": 6})
    changed = json.loads(project.dvc("status", "--json", "--with-deps", *targets).stdout)
    assert list(changed) == ["imdb_train@single"]  # the other model, tokenize, GloVe: up to date
    assert any("imdb.models.single" in json.dumps(entry) for entry in changed["imdb_train@single"])

    # bad input through the real CLI: a clear message, exit 1, no traceback
    (root / "params.yaml").write_text(
        (root / "params.yaml").read_text().replace("vocab_size: 27", "vocab_size: 100000")
    )
    failed = project.run("python", "-m", "stages.imdb.tokenize", check=False)
    assert failed.returncode == 1
    assert "error: imdb.tokenize.vocab_size = 100000 but the training reviews have only" in failed.stderr
    assert "Traceback" not in failed.stderr


def load(path):
    return np.load(path, allow_pickle=False)


def readme_predictions(tracking_uri: str, monkeypatch):
    """The README's Python example as written, run in this process with MLFLOW_TRACKING_URI set as its comment
    says: the value of its last line (the champion's scores of the review it gives)."""
    (snippet,) = code_blocks(REPO / "README.md", "The champion models", "python")
    statements = ast.parse(snippet).body
    assert isinstance(statements[-1], ast.Expr), "the README's example ends with the prediction"
    mlflow.set_tracking_uri(None)  # no URI that earlier code set in this process: the environment's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    namespace: dict = {}  # the example's own: pandas only if it imports it
    exec(compile(ast.Module(statements[:-1], type_ignores=[]), "README.md", "exec"), namespace)
    return eval(compile(ast.Expression(statements[-1].value), "README.md", "eval"), namespace)


@pytest.mark.slow  # two trainings of five epochs
def test_a_training_killed_inside_its_second_phase_resumes_there_with_its_optimizer_state_and_best_weights(tmp_path):
    """Killed after epoch 3 of [2 frozen at 1e-2, 3 trained at a ruinous 5.0]: the rerun restores the weights, the
    history and the best epoch with its weights (which come before the kill, and are returned exactly), recompiles
    phase 2 (embedding trainable, its rate) and puts its Adam state back: Adam has taken as many steps in phase 2
    as in an uninterrupted run (a fresh optimizer would have taken 2 epochs' worth)."""
    import keras

    from stages.imdb.train import train

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 3:  # before the backup of epoch 4: the backup holds epochs 1-3
                raise KeyboardInterrupt

    class Steps(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))

    steps: list[int] = []
    train_data, valid_data = toy_data()
    p = model_params(
        phases=[
            {"epochs": 2, "learning_rate": 0.01, "train_embedding": False},
            {"epochs": 3, "learning_rate": 5.0, "train_embedding": True},
        ]
    )
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        train(train_data, valid_data, p, 20, extra_callbacks=[Kill()], verbose=0, backup=backup)
    state = json.loads((backup / "state.json").read_text())
    assert state["epoch"] == 3 and len(state["history"]["val_accuracy"]) == 3
    with np.load(backup / "arrays.npz", allow_pickle=False) as arrays:
        kept = [arrays[f"best_{i}"] for i in range(sum(k.startswith("best_") for k in arrays.files))]

    model, history, summary = train(train_data, valid_data, p, 20, extra_callbacks=[Steps()], verbose=0, backup=backup)
    batches = -(-len(train_data[1]) // p.batch_size)
    assert steps == [3 * batches]  # only phase 2 was fitted, and its optimizer went on from its 1 epoch
    assert history["phase"] == [1, 1, 2, 2, 2] and history["embedding_trainable"] == [0, 0, 1, 1, 1]
    assert history["learning_rate"] == pytest.approx([0.01, 0.01, 5.0, 5.0, 5.0])
    assert history["val_accuracy"][:3] == state["history"]["val_accuracy"]  # the epochs before the kill kept
    assert summary["epochs"] == 5 and summary["best_epoch"] == state["best"][1] <= 3
    for weights, kept_weights in zip(model.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(weights, kept_weights)


@pytest.mark.slow
def test_a_real_imdb_training_killed_in_its_second_phase_resumes_there(project, http_server):
    imdb_url, imdb_sha = http_server.add("aclImdb_v1.tar.gz", imdb_archive(300))
    glove_url, glove_sha = http_server.add("glove.6B.zip", glove_archive())
    stage = "imdb_train@phased"
    phased = {
        **TINY_MODELS["single"],
        "batch_size": 4,  # 135 steps an epoch: long enough to be killed inside one
        "phases": [
            {"epochs": 2, "learning_rate": 0.01, "train_embedding": False},
            {"epochs": 3, "learning_rate": 0.001, "train_embedding": True},
        ],
    }
    project.set_params(
        {
            "imdb.source": {"url": imdb_url, "sha256": imdb_sha},
            "glove.source": {"url": glove_url, "sha256": glove_sha},
            "imdb.tokenize.vocab_size": 27,
            "imdb.tokenize.maxlen": 24,
            "imdb.models": {"phased": phased},
        }
    )
    project.dvc("repro", "imdb_tokenize", "imdb_glove_matrix")

    def in_phase_2(backup: Path) -> bool:
        return any(json.loads(state.read_text())["epoch"] >= 3 for state in backup.glob("*/train/state.json"))

    kill_when_backed_up(project, stage, in_phase_2)
    result = project.dvc("repro", stage)
    assert "resuming after epoch" in result.stdout, result.stdout[-3000:]
    resumed_at = int(result.stdout.split("resuming after epoch ")[1].split()[0])
    assert 3 <= resumed_at < 5
    assert f"Epoch {resumed_at + 1}/5" in result.stdout and "Epoch 1/5" not in result.stdout
    history = pd.read_csv(project.root / "data/imdb/history/phased.csv")
    assert history["phase"].tolist() == [1, 1, 2, 2, 2] and history["embedding_trainable"].tolist() == [0, 0, 1, 1, 1]
    assert json.loads((project.root / "data/imdb/metrics/train_phased.json").read_text())["epochs"] == 5
    assert not (project.root / ".cache/backup" / stage).exists()
    assert project.dvc("status", stage).stdout.strip().endswith("Data and pipelines are up to date.")
    assert sorted(stage_runs_by_status(project, "imdb", stage)) == ["FINISHED", "KILLED"]
    project.dvc("repro", "--force", "--single-item", stage)  # uninterrupted
    uninterrupted = pd.read_csv(project.root / "data/imdb/history/phased.csv")
    assert history["val_loss"].iloc[:resumed_at].tolist() == uninterrupted["val_loss"].iloc[:resumed_at].tolist()
    assert history["val_loss"].iloc[-1] == pytest.approx(uninterrupted["val_loss"].iloc[-1], abs=0.02)  # after resuming
