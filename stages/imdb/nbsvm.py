"""NB-SVM (Wang & Manning 2012), the strong linear baseline of the sentiment literature, built as a Keras model.

Features: the binarised word n-grams of a review (up to `ngram_max` words); each is scaled by its naive-Bayes
log-count ratio r = log((p / |p|) / (q / |q|)), p and q the smoothed counts of the n-gram in positive and negative
training reviews; a logistic regression on the scaled features then learns the weights, its C chosen on the
validation split. As every feature is 0 or 1, the scaling folds into the weights, so the trained model is a
Keras `TextVectorization` (multi-hot n-grams, sparse) and one `Dense` sigmoid unit: it takes raw review text,
saves as a `.keras` file (no pickle) and is evaluated, tracked and served like the neural models.
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from stages.common.cli import StageError
from stages.imdb.params import NbsvmParams

PUNCTUATION = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"


@keras.saving.register_keras_serializable(package="lesson5")
def standardize(text):
    """The `plain` spelling of imdb_tokenize in TensorFlow ops: lowercase, `<br />` a space, ASCII punctuation
    deleted; part of the saved model, so that raw text is spelled the same in training and serving."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<[bB][rR]\s*/?>", " ")
    return tf.strings.regex_replace(text, PUNCTUATION, "")


def ngram_layer(vocabulary: list[str], ngram_max: int) -> keras.layers.TextVectorization:
    """Raw text -> which of the vocabulary's n-grams it holds (a sparse 0/1 row; column 0: any other n-gram)."""
    return keras.layers.TextVectorization(
        standardize=standardize,
        split="whitespace",
        ngrams=ngram_max,
        output_mode="multi_hot",
        vocabulary=vocabulary,
        sparse=True,
        name="ngrams",
    )


def spelled(texts: list[str], batch: int = 4096) -> list[str]:
    """The texts as `standardize` spells them (the words the n-grams are made of)."""
    out = []
    for start in range(0, len(texts), batch):
        out += [t.decode("utf-8") for t in standardize(tf.constant(texts[start : start + batch])).numpy()]
    return out


def ngram_vocabulary(texts: list[str], p: NbsvmParams) -> list[str]:
    """The training reviews' n-grams in at least `min_df` reviews, the `max_features` most frequent of them."""
    from sklearn.feature_extraction.text import CountVectorizer

    counter = CountVectorizer(
        ngram_range=(1, p.ngram_max),
        token_pattern=r"\S+",
        lowercase=False,
        min_df=p.min_df,
        max_features=p.max_features,
        binary=True,
        dtype=np.int8,
    )
    counter.fit(spelled(texts))
    return [gram for gram, _ in sorted(counter.vocabulary_.items(), key=lambda item: item[1])]


def features(layer: keras.layers.TextVectorization, texts: list[str], batch: int = 1024):
    """The 0/1 n-gram matrix of `texts` as scipy CSR, computed by the model's own layer."""
    from scipy import sparse

    blocks = []
    for start in range(0, len(texts), batch):
        rows = layer(tf.constant(texts[start : start + batch]))
        indices = rows.indices.numpy()
        blocks.append(
            sparse.csr_matrix(
                (np.ones(len(indices), np.float32), (indices[:, 0], indices[:, 1])),
                shape=tuple(rows.dense_shape.numpy()),
            )
        )
    return sparse.vstack(blocks, format="csr")


def log_count_ratio(x, y: np.ndarray, alpha: float) -> np.ndarray:
    """r = log((p / |p|_1) / (q / |q|_1)) with p = alpha + the n-gram counts of positive reviews, q of negative."""
    p = alpha + np.asarray(x[y == 1].sum(axis=0)).ravel()
    q = alpha + np.asarray(x[y == 0].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


def fit_linear(x, y: np.ndarray, r: np.ndarray, c: float, seed: int):
    """(weights per n-gram with r folded in, bias) of the logistic regression on the r-scaled features."""
    from sklearn.linear_model import LogisticRegression

    regression = LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=1000, random_state=seed)
    regression.fit(x.multiply(r).tocsr(), y)
    return (regression.coef_[0] * r).astype(np.float32), np.float32(regression.intercept_[0])


def scores(x, weights: np.ndarray, bias: float) -> np.ndarray:
    """P(positive) of each row of the 0/1 n-gram matrix."""
    return 1.0 / (1.0 + np.exp(-(x @ weights + bias)))


def model(layer: keras.layers.TextVectorization, weights: np.ndarray, bias: float) -> keras.Model:
    """Raw review text in, P(positive) out."""
    review = keras.Input(shape=(), dtype="string", name="review")
    out = keras.layers.Dense(1, activation="sigmoid", name="sentiment")
    built = keras.Model(review, out(layer(review)), name="nbsvm")
    out.set_weights([weights[:, None], np.array([bias], np.float32)])
    return built


def train(train_reviews: tuple[list[str], np.ndarray], valid_reviews: tuple[list[str], np.ndarray], p: NbsvmParams):
    """Pure step: (Keras model, history {C, val_accuracy, val_loss per candidate}, summary). C is chosen on the
    validation reviews; with `refit`, the model is then fitted again on training and validation reviews together
    (n-grams, ratios and weights), with that C."""
    from sklearn.metrics import log_loss

    (texts, y), (valid_texts, valid_y) = train_reviews, valid_reviews
    if len(set(y.tolist())) != 2:
        raise StageError("NB-SVM needs positive and negative training reviews")
    vocabulary = ngram_vocabulary(texts, p)
    layer = ngram_layer(vocabulary, p.ngram_max)
    x, x_valid = features(layer, texts), features(layer, valid_texts)
    r = log_count_ratio(x, y, p.alpha)
    r[0] = 0.0  # column 0 stands for every n-gram outside the vocabulary: not a feature
    history: dict[str, list[float]] = {"C": [], "val_accuracy": [], "val_loss": []}
    for c in p.C:
        weights, bias = fit_linear(x, y, r, c, p.seed)
        predicted = scores(x_valid, weights, bias)
        history["C"].append(c)
        history["val_accuracy"].append(float(np.mean((predicted >= 0.5) == valid_y)))
        history["val_loss"].append(float(log_loss(valid_y, np.clip(predicted, 1e-7, 1 - 1e-7), labels=[0, 1])))
    best = int(np.argmax(history["val_accuracy"]))  # the first (smallest) C of the best accuracy
    chosen = p.C[best]
    summary = {
        "best_epoch": best + 1,  # the candidate's number, as the neural models' chosen epoch
        "epochs": len(p.C),
        "best_val_accuracy": history["val_accuracy"][best],
        "best_val_loss": history["val_loss"][best],
        "chosen_C": chosen,
        "n_ngrams": len(vocabulary),
    }
    if p.refit:
        all_texts, all_y = texts + valid_texts, np.concatenate([y, valid_y])
        vocabulary = ngram_vocabulary(all_texts, p)
        layer = ngram_layer(vocabulary, p.ngram_max)
        x = features(layer, all_texts)
        r = log_count_ratio(x, all_y, p.alpha)
        r[0] = 0.0
        summary |= {"refit_reviews": len(all_texts), "n_ngrams": len(vocabulary)}
    weights, bias = fit_linear(x, y if not p.refit else all_y, r, chosen, p.seed)
    return model(layer, weights, bias), history, summary


def strongest_ngrams(nbsvm: keras.Model, n: int) -> pd.DataFrame:
    """The n most positive and the n most negative n-grams of a trained model, with their weights."""
    vocabulary = nbsvm.get_layer("ngrams").get_vocabulary()
    weights = nbsvm.get_layer("sentiment").get_weights()[0][:, 0]
    order = np.argsort(weights[1:]) + 1  # column 0 is every n-gram outside the vocabulary
    rows = [(vocabulary[i], float(weights[i]), "positive") for i in order[::-1][:n]]
    rows += [(vocabulary[i], float(weights[i]), "negative") for i in order[:n]]
    return pd.DataFrame(rows, columns=["ngram", "weight", "sentiment"])
