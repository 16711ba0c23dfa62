"""IMDB benchmark on the real data (run the imdb_tokenize and imdb_glove_matrix stages first).

Prints: reading + tokenizing 50,000 reviews with this project's tokenizer and with Keras
TextVectorization (same semantics); training throughput per model through the pipeline's `train()`
and through a plain Keras script of the same model, with their ratio; test accuracy of the chosen
models over several seeds (epoch chosen on the validation split, test evaluated once), and the
fast.ai-protocol figure (best test accuracy over epochs, the test set used as validation), labelled; with
--ensemble N, also ensembles of N models (mean probability of consecutive seeds), labelled: not a single model.
A seed whose model did not learn (the train stage refuses it) is reported and left out of the figures.

    nice -n 5 python -m benchmarks.imdb                      # defaults: 3 seeds of multi_cnn
    python -m benchmarks.imdb --quality-models all --seeds 1  # every model once
    python -m benchmarks.imdb --seeds 9 --ensemble 3 --throughput-reviews 0 --skip-tokenize  # 3 ensembles of 3
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

from benchmarks.common import benchmark_command, mean_and_spread, record_result, throwaway_mlflow_store

LABELS = {
    "single": "single hidden layer",
    "cnn": "1-D CNN",
    "glove_cnn": "GloVe CNN",
    "multi_cnn": "multi-size CNN",
    "lstm": "LSTM",
}  # for the results records' descriptions


def keras_tokenize(train_texts: list[str], test_texts: list[str], vocab_size: int):
    """The library route: TextVectorization with the same standardisation; returns (vocab words, train ids, test ids)
    as ragged lists in this project's id layout (0 padding, 1..vocab_size-2 words, vocab_size-1 rare)."""
    import tensorflow as tf
    from keras import layers

    def standardize(text):
        text = tf.strings.regex_replace(tf.strings.lower(text), r"<br\s*/?>", " ")
        return tf.strings.regex_replace(text, r'[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~\']', "")

    vectorize = layers.TextVectorization(max_tokens=vocab_size, standardize=standardize, ragged=True)
    vectorize.adapt(tf.data.Dataset.from_tensor_slices(train_texts).batch(1024))
    vocab = vectorize.get_vocabulary()[2:]  # '' and [UNK] first

    def ids(texts):
        out = []
        for start in range(0, len(texts), 4096):
            batch = vectorize(tf.constant(texts[start : start + 4096])).numpy()
            # TextVectorization: 1 is [UNK], words from 2; here: words from 1, rare last
            out.extend(np.where(row == 1, vocab_size - 1, row - 1) for row in batch)
        return out

    return vocab, ids(train_texts), ids(test_texts)


def bench_tokenizers(vocab_size: int, maxlen: int, command: str) -> None:
    from stages.imdb.paths import ARCHIVE
    from stages.imdb.reviews import read_reviews
    from stages.imdb.sequences import pad
    from stages.imdb.tokenize import build_vocab, encode, words

    started = time.perf_counter()
    reviews = read_reviews(ARCHIVE)
    train_texts, test_texts = reviews["train"][0], reviews["test"][0]
    read_s = time.perf_counter() - started

    started = time.perf_counter()
    train_words, test_words = words(train_texts), words(test_texts)
    vocab = [w for w, _ in build_vocab(train_words, vocab_size)]
    own = encode(train_words, vocab, maxlen), encode(test_words, vocab, maxlen)
    own_s = time.perf_counter() - started

    started = time.perf_counter()
    keras_vocab, train_ids, test_ids = keras_tokenize(train_texts, test_texts, vocab_size)
    library = pad(train_ids, maxlen), pad(test_ids, maxlen)
    keras_s = time.perf_counter() - started

    same_words = len(set(vocab) & set(keras_vocab)) / len(vocab)
    same_ids = np.mean([np.mean(a == b) for a, b in zip(own, library)])
    print(
        f"tokenize 50,000 reviews: reading {read_s:.1f} s; own tokenizer {own_s:.1f} s "
        f"(total {read_s + own_s:.1f} s); Keras TextVectorization {keras_s:.1f} s (total {read_s + keras_s:.1f} s)"
    )
    print(
        f"  same vocabulary words: {same_words:.2%} (differences are ties in frequency at the cut-off); "
        f"same ids: {same_ids:.2%} of positions"
    )
    for figure, description, value, unit in (
        ("read_s", "reading the 50,000 reviews", round(read_s, 1), "s"),
        ("own_s", "tokenizing 50,000 reviews with this project's tokenizer (after reading)", round(own_s, 1), "s"),
        ("keras_s", "the same with Keras TextVectorization (after reading)", round(keras_s, 1), "s"),
        ("same_vocabulary", "vocabulary words the two tokenizers share", round(100 * same_words, 2), "%"),
        ("same_ids", "token positions where the two tokenizers give the same id", round(100 * same_ids, 2), "%"),
    ):
        record_result("imdb", f"imdb.tokenize.{figure}", value, description=description, unit=unit, command=command)


def plain_keras_model(p, vocab_size: int, maxlen: int, glove):
    """The same models written as a plain Keras 3 script would (Sequential, stock layers)."""
    import keras
    from keras import layers

    from stages.imdb.models import WordDropoutEmbedding

    init = keras.initializers.Constant(glove) if p.embedding == "glove" else "uniform"
    embedding = WordDropoutEmbedding(
        vocab_size,
        p.embedding_dim,
        word_dropout=p.word_dropout,
        embeddings_initializer=init,
        mask_zero=p.kind == "lstm",
        embeddings_regularizer=keras.regularizers.l2(p.embedding_l2) if p.embedding_l2 else None,
        trainable=p.phases[0].train_embedding,
    )  # as the first phase trains
    tokens = keras.Input(shape=(maxlen,), dtype="int32")
    x = embedding(tokens)
    if p.embedding_dropout:
        x = layers.Dropout(p.embedding_dropout)(x)
    if p.kind == "lstm":
        x = layers.LSTM(p.lstm_units)(x)
    else:
        if p.kind == "cnn":
            convs = [
                layers.Flatten()(
                    layers.MaxPooling1D()(layers.Conv1D(p.filters, k, padding="same", activation="relu")(x))
                )
                for k in p.kernel_sizes
            ]
            x = convs[0] if len(convs) == 1 else layers.concatenate(convs)
            if p.conv_dropout:
                x = layers.Dropout(p.conv_dropout)(x)
        else:
            x = layers.Flatten()(x)
        x = layers.Dropout(p.hidden_dropout)(layers.Dense(p.hidden, activation="relu")(x))
    model = keras.Model(tokens, layers.Dense(1, activation="sigmoid")(x))
    model.compile(
        optimizer=keras.optimizers.Adam(p.phases[0].learning_rate), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def epoch_timer(seconds: list[tuple[float, float]]):
    """A callback appending each epoch's (wall, process CPU) seconds, training and validation, to `seconds`."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append((time.perf_counter() - self.started[0], time.process_time() - self.started[1]))

    return Timer()


def bench_throughput(models: dict, vocab_size: int, glove, n_reviews: int, repeats: int, command: str) -> None:
    """The pipeline's train() (phases, best-epoch keeping, MLflow epoch logging) against a bare fit(), `repeats` times
    each, alternating which goes first. The cost is read from reviews per CPU-second: on this shared machine the
    process gets 1.3 to 1.8 of the 2 cores, so wall-clock rates swing (one cnn run's 8 epochs: 524-764 reviews/s
    wall, 406-460 per CPU-second)."""
    from stages.common.tracking import stage_run
    from stages.imdb.phases import KeepBest, epoch_end_callbacks
    from stages.imdb.sequences import load_arrays
    from stages.imdb.train import train

    def callback_seconds(model, monitor: str, run, epochs: int = 20) -> float:
        """Mean wall seconds of the pipeline's own epoch-end work (phase log, best-weights copy, MLflow metrics),
        timed directly: precise where the A/B rates above are not. Every epoch improves, so weights are copied."""
        callbacks = epoch_end_callbacks(1, KeepBest(monitor), [run.keras_callback()])
        for callback in callbacks:
            callback.set_model(model)
        started = time.perf_counter()
        for epoch in range(epochs):
            logs = {"loss": 0.5, "accuracy": 0.5, "val_loss": 1 - epoch / 100, "val_accuracy": epoch / 100}
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
        return (time.perf_counter() - started) / epochs

    arrays = functools.cache(load_arrays)  # the models differ at most in maxlen
    print(
        f"training throughput, {n_reviews:,} training reviews per epoch + validation, second epoch (the first one "
        f"also traces the graph), median of {repeats} alternated runs; reviews/s wall | reviews per CPU-second:"
    )
    with throwaway_mlflow_store():
        for name, p in models.items():
            two_epochs = type(p).model_validate(
                {**p.model_dump(), "phases": [p.phases[0].model_dump() | {"epochs": 2}]}
            )
            train_x, train_y = arrays(split="train", maxlen=p.maxlen)
            valid = arrays(split="valid", maxlen=p.maxlen)
            subset = (train_x[:n_reviews], train_y[:n_reviews])
            trained = []  # the last pipeline model, for timing its callbacks

            def plain_seconds() -> tuple[float, float]:
                seconds = []
                plain_keras_model(p, vocab_size, subset[0].shape[1], glove).fit(
                    *subset,
                    batch_size=p.batch_size,
                    epochs=2,
                    validation_data=valid,
                    verbose=0,
                    callbacks=[epoch_timer(seconds)],
                )
                return seconds[-1]

            def pipeline_seconds() -> tuple[float, float]:
                seconds = []
                with stage_run("imdb", f"benchmark@{name}") as run:
                    model, _, _ = train(
                        subset,
                        valid,
                        two_epochs,
                        vocab_size,
                        glove,
                        extra_callbacks=[run.keras_callback(), epoch_timer(seconds)],
                        verbose=0,
                    )
                    trained[:] = [model]
                return seconds[-1]

            plain, pipeline = [], []
            for repeat in range(repeats):
                order = [(plain, plain_seconds), (pipeline, pipeline_seconds)]
                for timings, measure in order if repeat % 2 == 0 else order[::-1]:
                    timings.append(measure())
            (wall, cpu), (plain_wall, plain_cpu) = (
                [statistics.median(n_reviews / t[i] for t in runs) for i in (0, 1)] for runs in (pipeline, plain)
            )
            with stage_run("imdb", f"benchmark@{name}") as run:
                epoch_end = callback_seconds(trained[0], p.monitor, run)
            epoch_seconds = n_reviews / wall
            print(
                f"  {name:>10}: pipeline {wall:6,.0f} | {cpu:6,.0f}   plain Keras {plain_wall:6,.0f} | "
                f"{plain_cpu:6,.0f}   pipeline cost {plain_cpu / cpu - 1:+.1%} CPU "
                f"({plain_wall / wall - 1:+.1%} wall); "
                f"its epoch-end callbacks {epoch_end * 1000:.0f} ms = {epoch_end / epoch_seconds:.2%} of a "
                f"{epoch_seconds:.1f} s epoch",
                flush=True,
            )
            setting = (
                f"second of 2 epochs on {n_reviews:,} reviews, median of {repeats} alternated runs: pipeline "
                f"{wall:,.0f} reviews/s wall, {cpu:,.0f} per CPU-second; plain Keras {plain_wall:,.0f} | "
                f"{plain_cpu:,.0f}; wall cost {plain_wall / wall - 1:+.1%}"
            )
            record_result(
                "imdb",
                f"imdb.{name}.pipeline_cpu_cost",
                round(100 * (plain_cpu / cpu - 1), 1),
                description=f"CPU cost of the pipeline's train() over a plain Keras script, {name} (median "
                "reviews per CPU-second)",
                unit="%",
                fastai="< 5% (goal)",
                command=command,
                note=setting,
            )
            record_result(
                "imdb",
                f"imdb.{name}.epoch_end_share",
                round(100 * epoch_end / epoch_seconds, 2),
                description="the pipeline's epoch-end callbacks (phase log, best-weights copy, MLflow "
                f"metrics) timed directly, share of a {name} epoch",
                unit="%",
                fastai="< 5% (goal)",
                command=command,
                note=f"{epoch_end * 1000:.0f} ms of a {epoch_seconds:.1f} s epoch on {n_reviews:,} reviews",
            )


def ensemble_accuracies(probabilities: list[np.ndarray], labels: np.ndarray, size: int) -> list[float]:
    """Accuracy of each ensemble of `size` consecutive models (their mean probability, scored by imdb_evaluate's
    rule like a single model); a remainder is left out."""
    from stages.imdb.evaluate import evaluate

    return [
        evaluate(np.mean(probabilities[start : start + size], axis=0), labels.astype(int))[0]["test_accuracy"]
        for start in range(0, len(probabilities) - size + 1, size)
    ]


def bench_quality(
    models: dict, vocab_size: int, glove, seeds: list[int], command: str, fastai: dict[str, float], ensemble: int = 1
) -> None:
    import keras

    from stages.common.cli import StageError
    from stages.imdb.evaluate import evaluate
    from stages.imdb.sequences import load_arrays
    from stages.imdb.train import refit, train

    def spread(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    print(
        "test accuracy, mean +- standard deviation over seeds "
        f"{seeds} (honest: epoch chosen on the validation split, test evaluated once):"
    )
    for name, p in models.items():
        train_data, valid_data, test = (load_arrays(split=s, maxlen=p.maxlen) for s in ("train", "valid", "test"))
        honest, fastai_protocol, times, probabilities, learned = [], [], [], [], []
        for seed in seeds:
            per_epoch = []

            class TestEachEpoch(keras.callbacks.Callback):  # fast.ai's protocol, reported only, never selects
                def on_epoch_end(self, epoch, logs=None):
                    per_epoch.append(self.model.evaluate(*test, batch_size=512, verbose=0)[1])

            seeded = type(p).model_validate({**p.model_dump(), "seed": seed})
            started = time.perf_counter()
            try:
                model, _, summary = train(
                    train_data, valid_data, seeded, vocab_size, glove, extra_callbacks=[TestEachEpoch()], verbose=0
                )
                if seeded.refit:  # as imdb_train does: again on every training review, to the chosen epoch
                    model, _ = refit(
                        train_data, valid_data, seeded, summary["best_epoch"], vocab_size, glove, verbose=0
                    )
            except StageError as err:  # e.g. a seed whose model did not learn: reported, left out of the figures
                print(f"  {name} seed {seed}: left out: {err}", flush=True)
                continue
            times.append(time.perf_counter() - started)
            learned.append(seed)
            probabilities.append(model.predict(test[0], batch_size=512, verbose=0).reshape(-1))
            honest.append(evaluate(probabilities[-1], test[1].astype(int))[0]["test_accuracy"])
            fastai_protocol.append(max(per_epoch))
            print(
                f"  {name} seed {seed}: test {honest[-1]:.4f} (epoch {summary['best_epoch']} chosen on validation); "
                f"fast.ai protocol {fastai_protocol[-1]:.4f}; per-epoch test {[round(a, 4) for a in per_epoch]}",
                flush=True,
            )
        if not honest:
            continue
        print(
            f"  {name:>10}: {statistics.mean(honest):.2%} +- {spread(honest):.2%} honest | "
            f"{statistics.mean(fastai_protocol):.2%} +- {spread(fastai_protocol):.2%} fast.ai protocol "
            f"(best epoch on test) | {statistics.mean(times):.0f} s per run incl. per-epoch test passes"
        )
        left_out = f"; left out (did not learn): seeds {sorted(set(seeds) - set(learned))}" if learned != seeds else ""
        label, fastai_figure = LABELS.get(name, name), round(100 * fastai[name], 2) if name in fastai else None
        for figure, values, what in (
            ("test_accuracy", honest, "test accuracy (epoch chosen on validation)"),
            (
                "test_accuracy_fastai_protocol",
                fastai_protocol,
                "fast.ai's protocol (best epoch on the test set; reported, never used to choose)",
            ),
        ):
            mean, std = mean_and_spread([100 * a for a in values], 2)
            record_result(
                "imdb",
                f"imdb.{name}.{figure}",
                mean,
                description=f"{label} {what}",
                unit="%",
                spread=std,
                seeds=learned,
                per_seed=[round(100 * a, 2) for a in values],
                fastai=fastai_figure,
                command=command,
                note=f"{statistics.mean(times):.0f} s per run incl. per-epoch test passes{left_out}",
            )
        if 1 < ensemble <= len(probabilities):
            ensembles = ensemble_accuracies(probabilities, test[1], ensemble)
            print(
                f"  {name:>10}: ensembles of {ensemble} (mean probability of consecutive seeds; not a single model): "
                f"{' '.join(f'{a:.4f}' for a in ensembles)} -> {statistics.mean(ensembles):.2%} +- "
                f"{spread(ensembles):.2%}",
                flush=True,
            )
            mean, std = mean_and_spread([100 * a for a in ensembles], 2)
            record_result(
                "imdb",
                f"imdb.{name}.ensemble{ensemble}.test_accuracy",
                mean,
                description=f"ensembles of {ensemble} {label} models (mean probability of consecutive "
                "seeds; not a single model)",
                unit="%",
                spread=std,
                seeds=learned[: len(ensembles) * ensemble],
                per_seed=None,
                fastai=fastai_figure,
                command=command,
                note="ensembles: " + " / ".join(f"{100 * a:.2f}%" for a in ensembles),
            )


def bench_nbsvm(name: str, p, tokenize, seeds: list[int], command: str) -> None:
    """NB-SVM over `seeds` of the validation split (C chosen on it, the test set read once per seed): test accuracy
    mean ± std, and the training time and peak memory of one fit."""
    import resource

    from stages.imdb import nbsvm
    from stages.imdb.evaluate import evaluate
    from stages.imdb.paths import ARCHIVE
    from stages.imdb.reviews import read_reviews
    from stages.imdb.tokenize import stratified_valid_mask

    reviews = read_reviews(ARCHIVE)
    (texts, labels, _), (test_texts, test_labels, _) = reviews["train"], reviews["test"]
    accuracies, seconds, chosen = [], [], []
    for seed in seeds:
        valid = stratified_valid_mask(labels, tokenize.valid_fraction, seed)
        parts = [([texts[i] for i in rows], labels[rows]) for rows in (np.flatnonzero(~valid), np.flatnonzero(valid))]
        started = time.perf_counter()
        model, _, summary = nbsvm.train(*parts, p)
        seconds.append(time.perf_counter() - started)
        probabilities = model.predict(np.array(test_texts, dtype=object), batch_size=512, verbose=0).reshape(-1)
        accuracies.append(evaluate(probabilities, test_labels.astype(int))[0]["test_accuracy"] * 100)
        chosen.append(summary["chosen_C"])
        print(
            f"  {name} split seed {seed}: C {summary['chosen_C']} (val {summary['best_val_accuracy']:.4f}), "
            f"{summary['n_ngrams']:,} n-grams, test {accuracies[-1]:.2f}%, {seconds[-1]:.0f} s",
            flush=True,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    value, spread = mean_and_spread(accuracies, 2)
    settings = f"n-grams up to {p.ngram_max}, at most {p.max_features} of them, refit {p.refit}"
    print(
        f"  {name}: test accuracy {value:.2f} ± {spread or 0:.2f}% over split seeds {seeds}; "
        f"{statistics.mean(seconds):.0f} s per fit; peak RSS {peak_mb:,.0f} MB"
    )
    record_result(
        "imdb",
        f"imdb.{name}.test_accuracy",
        value,
        spread=spread,
        seeds=seeds,
        per_seed=[round(a, 2) for a in accuracies],
        unit="%",
        command=command,
        description=f"NB-SVM test accuracy, C chosen on the validation split of each seed ({settings})",
        fastai="91.22% (Wang & Manning 2012, bigrams); 91.87% (Mesnil et al. 2014, trigrams)",
        note=f"chosen C per seed: {chosen}; the seed sets the validation split (imdb.tokenize.seed)",
    )
    record_result(
        "imdb",
        f"imdb.{name}.train_s",
        round(statistics.mean(seconds)),
        unit="s",
        command=command,
        seeds=seeds,
        per_seed=[round(t) for t in seconds],
        description=f"NB-SVM training time of one fit: n-grams, ratios, the C search and the refit ({settings})",
    )
    record_result(
        "imdb",
        f"imdb.{name}.peak_rss",
        round(peak_mb),
        unit="MB",
        command=command,
        description="NB-SVM benchmark process: peak resident memory over its fits and test predictions",
    )


def selected(models: dict, spec: str) -> dict:
    """The neural models a --*-models option names: 'all', 'none' or comma-separated names (an unknown one is an
    error); NB-SVM (imdb.nbsvm) has its own option."""
    names = {"all": list(models), "none": []}.get(spec, spec.split(","))
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SystemExit(f"no model {', '.join(unknown)} under imdb.models in params.yaml ({', '.join(models)})")
    return {n: models[n] for n in names}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ensemble", type=int, default=1, help="also score ensembles of this many consecutive seeds")
    parser.add_argument("--quality-models", default="multi_cnn", help="comma-separated names, 'all' or 'none'")
    parser.add_argument("--throughput-models", default="all", help="comma-separated names, 'all' or 'none'")
    parser.add_argument("--throughput-reviews", type=int, default=3200, help="0 skips the throughput table")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path per model")
    parser.add_argument("--skip-tokenize", action="store_true")
    parser.add_argument("--nbsvm-seeds", type=int, default=3, help="NB-SVM over this many validation splits; 0 skips")
    args = parser.parse_args(argv)

    from stages.common.io import load_npy
    from stages.imdb import params as imdb_params
    from stages.imdb.paths import GLOVE_EMBEDDING, NBSVM

    p = imdb_params.load()
    command = benchmark_command("benchmarks.imdb", argv)
    started = time.perf_counter()
    if not args.skip_tokenize:
        bench_tokenizers(p.tokenize.vocab_size, p.tokenize.maxlen, command)
    timed = selected(p.models, args.throughput_models) if args.throughput_reviews else {}
    quality = selected(p.models, args.quality_models)
    glove = load_npy(GLOVE_EMBEDDING) if timed or quality else None  # the neural models' (imdb_glove_matrix)
    if timed:
        bench_throughput(timed, p.tokenize.vocab_size, glove, args.throughput_reviews, args.repeats, command)
    if quality:
        bench_quality(
            quality,
            p.tokenize.vocab_size,
            glove,
            [next(iter(quality.values())).seed + i for i in range(args.seeds)],
            command,
            p.fastai_test_accuracy,
            args.ensemble,
        )
    if args.nbsvm_seeds:
        seeds = [p.tokenize.seed + i for i in range(args.nbsvm_seeds)]
        bench_nbsvm(NBSVM, p.nbsvm, p.tokenize, seeds, command)
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
