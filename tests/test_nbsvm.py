"""NB-SVM on small generated reviews: it learns what only n-grams tell, chooses C on the validation reviews alone,
and saves as a model that reads raw text (no pickle), through Keras and through MLflow's pyfunc."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from stages.common.io import load_keras, save_keras
from stages.common.params import ParamsError, read_params_file, validate_section
from stages.imdb.params import ImdbParams, NbsvmParams
from tests.conftest import REPO

FILLER = ["the", "plot", "actor", "scene", "film", "story", "music", "ending", "camera", "script"]


def planted_reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Positive reviews hold "not bad" and a stray "good", negative ones "not good" and a stray "bad": every single
    word is as frequent in both classes, so only the pairs of words tell them apart."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(6, 14))]
        words.insert(rng.randint(0, len(words)), "not bad" if label else "not good")
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        texts.append(
            "<br />".join([" ".join(words[: len(words) // 2]).capitalize(), " ".join(words[len(words) // 2 :])])
        )
        labels.append(label)
    return texts, np.array(labels, dtype=np.float32)


def params(**changes) -> NbsvmParams:
    return NbsvmParams(
        ngram_max=2, max_features=None, min_df=1, alpha=1.0, C=[0.1, 1.0], refit=False, seed=0
    ).model_copy(update=changes)


def test_word_pairs_are_learned_where_single_words_tell_nothing():
    from stages.imdb import nbsvm

    train, valid, test = planted_reviews(200, 0), planted_reviews(60, 1), planted_reviews(100, 2)
    model, history, summary = nbsvm.train(train, valid, params())
    probabilities = model.predict(np.array(test[0], dtype=object), verbose=0).reshape(-1)
    assert np.mean((probabilities >= 0.5) == test[1]) == 1.0
    strongest = nbsvm.strongest_ngrams(model, 1)
    assert strongest["ngram"].tolist() == ["not bad", "not good"]
    assert strongest["sentiment"].tolist() == ["positive", "negative"]

    unigrams, _, _ = nbsvm.train(train, valid, params(ngram_max=1))  # single words only: a coin toss
    assert np.mean((unigrams.predict(np.array(test[0], dtype=object), verbose=0).reshape(-1) >= 0.5) == test[1]) < 0.7


def test_c_is_chosen_by_the_validation_reviews_alone():
    from stages.imdb import nbsvm

    train, (valid_texts, valid_y) = planted_reviews(120, 0), planted_reviews(40, 1)
    valid_y = valid_y.copy()
    valid_y[:8] = 1 - valid_y[:8]  # some validation labels wrong, so the candidates' scores differ
    candidates = [0.001, 0.01, 0.1, 1.0, 10.0]
    _, history, summary = nbsvm.train(train, (valid_texts, valid_y), params(C=candidates))
    _, flipped, flipped_summary = nbsvm.train(train, (valid_texts, 1 - valid_y), params(C=candidates))
    assert history["C"] == candidates and summary["epochs"] == len(candidates)
    assert summary["chosen_C"] == candidates[int(np.argmax(history["val_accuracy"]))]
    # the same fits scored on the opposite labels: the choice follows the validation labels, nothing else
    assert flipped["val_accuracy"] == pytest.approx([1 - a for a in history["val_accuracy"]])
    assert flipped_summary["chosen_C"] == candidates[int(np.argmax(flipped["val_accuracy"]))]


def test_the_saved_model_reads_raw_text_through_keras_and_mlflow_without_pickle(tmp_path, monkeypatch, mlflow_store):
    import mlflow

    from stages.imdb import nbsvm

    model, _, _ = nbsvm.train(planted_reviews(120, 0), planted_reviews(40, 1), params())
    reviews = ["The FILM was not bad!", "The ending... not good.<br /><br />Music"]
    expected = model.predict(np.array(reviews, dtype=object), verbose=0).reshape(-1)
    save_keras(tmp_path / "nbsvm.keras", model)
    loaded = load_keras(tmp_path / "nbsvm.keras")  # safe_mode: the standardisation is a registered function
    assert loaded.predict(np.array(reviews, dtype=object), verbose=0).reshape(-1) == pytest.approx(expected)
    assert expected[0] > 0.5 > expected[1]

    from stages.common.tracking import stage_run
    from stages.common.tracking_store import experiment_name

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    # its experiment made here first, so the logged model goes to tmp_path, not to the project's own mlruns/
    mlflow.MlflowClient(mlflow_store).create_experiment(experiment_name("imdb"), (tmp_path / "mlruns").as_uri())
    monkeypatch.chdir(REPO)  # the model's code and the `stages` package it ships are read from the project
    with stage_run("imdb", "imdb_nbsvm_train") as run:
        run.log_text_model(str(tmp_path / "nbsvm.keras"), "stages/imdb/nbsvm_serving.py", "nbsvm", 1)
    assert run.active  # logged, not degraded to a warning
    (logged,) = mlflow.MlflowClient(mlflow_store).search_logged_models([run_experiment(mlflow_store)])
    served = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")  # what `mlflow models serve` answers with
    answer = np.asarray(served.predict(pd.DataFrame({"review": reviews}))).reshape(-1)
    assert answer == pytest.approx(expected, abs=1e-6)


def run_experiment(uri: str) -> str:
    import mlflow

    return mlflow.MlflowClient(uri).get_experiment_by_name("lesson5-imdb").experiment_id


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nbsvm": {"C": [0.1, -1.0]}}, "every C must be > 0"),
        ({"nbsvm": {"ngram_max": 4}}, "imdb.nbsvm.ngram_max = 4"),
        ({"embeddings": {"model": "nbsvm"}}, "'nbsvm' is neither 'auto' nor one of the models with an embedding"),
        ({"models": {"nbsvm": "cnn"}}, "models: 'nbsvm' is the NB-SVM model's name (imdb.nbsvm)"),
    ],
)
def test_bad_nbsvm_params_name_the_key_and_the_problem(change, message):
    section = read_params_file(REPO / "params.yaml")["imdb"]
    for key, value in change.items():
        if key == "models":  # a Keras model under NB-SVM's name: its files would be NB-SVM's
            section["models"] |= {name: section["models"][model] for name, model in value.items()}
        else:
            section[key] = {**section[key], **value}
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_section("imdb", section, ImdbParams)
