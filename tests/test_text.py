"""Text workload: robust decoding, vocabularies, sequences, the lesson's models and evaluation, on generated text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from stages.common.cli import StageError
from stages.common.io import load_keras, save_keras
from stages.common.params import ParamsError, validate_section
from stages.text import corpus
from stages.text.evaluate import evaluate, probe, validation_loss
from stages.text.models import lstm_model, merge_model, simple_rnn_model
from stages.text.params import EvaluateParams, LSTMParams, MergeParams, PrepareParams, TextParams
from stages.text.prepare import prepare
from stages.text.train import train
from tests.conftest import REPO

WORDS = [
    "the",
    "philosophy",
    "of",
    "truth",
    "and",
    "will",
    "to",
    "power",
    "is",
    "a",
    "woman",
    "free",
    "spirit",
    "that",
    "morality",
    "thinks",
    "in",
    "itself",
]


def generated_text(n_words: int = 3000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=n_words)
    return " ".join(w + ("." if i % 9 == 8 else "") for i, w in enumerate(words))


PREPARE = PrepareParams(
    decode_errors="repair", replacement="\ufffd", lowercase=True, valid_fraction=0.1, max_words=50, min_word_count=1
)
EVALUATE = EvaluateParams(
    probes=[["phi", "l"], [" th", "e"], ["q!", "x"]],
    word_probes=[["the will to", "power"]],
    seed_text="the philosophy",
    temperatures=[0.5, 1.0],
    sample_length=15,
    seed=0,
)


def lstm_params(**changes) -> LSTMParams:
    values = (
        dict(
            kind="char_lstm",
            seq_len=12,
            embedding=8,
            units=[32],
            dropout=0.0,
            epochs=2,
            batch_size=32,
            lr_schedule=[[0, 0.01]],
            seed=0,
        )
        | changes
    )
    return LSTMParams(**values)


# ---------------------------------------------------------------- decoding (the real file is not valid UTF-8)


def test_repair_undoes_latin1_lowercasing_of_utf8():
    # the byte patterns of nietzsche.txt: 'werthschätzung', 'mérimée', 'Æschylus' with 0xC3 lowered to 0xE3
    data = b"(werthsch\xe3\xa4tzung) prosper m\xe3\xa9rim\xe3\xa9e \xe3\x86schylus \xe3\xa4\xe3\xa4"
    text, counts = corpus.decode(data, "repair")
    assert text == "(werthschätzung) prosper mérimée Æschylus ää"
    assert counts == {"repaired_chars": 6, "replaced_bytes": 0}


def test_repair_replaces_what_it_cannot_repair_and_counts_bytes():
    text, counts = corpus.decode(b"caf\xe9 ok \xff\xfe end \xc3", "repair", replacement="?")
    assert text == "caf? ok ?? end ?"
    assert counts == {"repaired_chars": 0, "replaced_bytes": 4}


def test_replace_policy_replaces_every_undecodable_byte():
    text, counts = corpus.decode(b"sch\xe3\xa4tzung \xc3\xa4", "replace", replacement="?")
    assert text == "sch??tzung ä" and counts["replaced_bytes"] == 2 and counts["repaired_chars"] == 0


def test_strict_policy_names_byte_and_line():
    with pytest.raises(StageError, match=r"not valid UTF-8 at byte 13 \(line 2\).*decode_errors"):
        corpus.decode(b"first line\nab\xe3\xa4c", "strict", where="corpus.txt")


def test_valid_utf8_is_untouched():
    text, counts = corpus.decode("naïve café\n".encode(), "strict")
    assert text == "naïve café\n" and counts == {"repaired_chars": 0, "replaced_bytes": 0}


# ---------------------------------------------------------------- prepare


def test_prepare_holds_out_the_tail_with_both_vocabularies():
    text = generated_text()
    data = text.upper().encode() + b" werthsch\xe3\xa4tzung"
    arrays, vocab, stats = prepare(data, PREPARE)
    full = text + " werthschätzung"
    assert stats["repaired_chars"] == 1 and stats["replaced_bytes"] == 0 and stats["chars"] == len(full)
    assert stats["n_valid_chars"] == round(len(full) * 0.1)
    chars = vocab["chars"]
    decoded = "".join(chars[i] for i in np.concatenate([arrays["train_chars"], arrays["valid_chars"]]))
    assert decoded == full  # lowercased, in order, the tail last
    assert vocab["words"][0] == corpus.UNKNOWN_WORD and "philosophy" in vocab["words"]
    assert vocab["words"][arrays["valid_words"][-1]] == corpus.UNKNOWN_WORD  # 'werthschätzung' never seen in training


def test_prepare_keeps_case_when_asked():
    _, vocab, _ = prepare(b"Aa Bb Cc " * 50, PREPARE.model_copy(update={"lowercase": False}))
    assert {"A", "a"} <= set(vocab["chars"])


@pytest.mark.parametrize("data", [b"", b"  \n\t\n"])
def test_empty_corpus_is_a_clear_error(data):
    with pytest.raises(StageError, match="corpus.txt is empty.*text.source.url"):
        prepare(data, PREPARE, where="corpus.txt")


def test_one_character_corpus_cannot_be_split():
    with pytest.raises(StageError, match="1 character.*too short to hold out"):
        prepare(b"a", PREPARE)


def test_strict_decoding_fails_prepare_with_the_offset():
    with pytest.raises(StageError, match="byte 5"):
        prepare(b"hello\xe3\xa4 world" * 10, PREPARE.model_copy(update={"decode_errors": "strict"}))


def test_word_vocabulary_is_ranked_and_capped():
    tokens = corpus.words("b a c a b a. don't stop, don't")
    assert tokens == ["b", "a", "c", "a", "b", "a", ".", "don't", "stop", ",", "don't"]
    assert corpus.word_vocabulary(tokens, max_words=4, min_count=2) == ["<unk>", "a", "b", "don't"]
    assert corpus.join_words(["well", ",", "yes", "."]) == "well, yes."


# ---------------------------------------------------------------- sequences and params


def test_sequences_are_windows_and_next_tokens():
    x, y = corpus.sequences(np.arange(10), seq_len=3, stride=2)
    assert x.tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [3, 4, 5], [5, 6, 7], [7, 8, 9]]


@pytest.mark.parametrize("seq_len", [0, -3])
def test_sequence_length_below_one_is_a_clear_error(seq_len):
    with pytest.raises(StageError, match="sequence length and stride must be >= 1"):
        corpus.sequences(np.arange(10), seq_len=seq_len, stride=1)


def test_text_shorter_than_one_sequence_is_a_clear_error():
    with pytest.raises(StageError, match=r"the training text has 5 token\(s\), fewer than one sequence of seq_len=64"):
        corpus.sequences(np.arange(5), 64, 64, "the training text")


@pytest.mark.parametrize("seq_len", [0, -1])
def test_params_reject_sequence_length_below_one(seq_len):
    section = yaml.safe_load((REPO / "params.yaml").read_text())["text"]
    TextParams.model_validate(section)  # the shipped params are valid
    section["models"]["char_lstm"]["seq_len"] = seq_len
    with pytest.raises(ParamsError, match=r"text\.models\.char_lstm\.char_lstm\.seq_len.*greater than or equal to 1"):
        validate_section("text", section, TextParams)


def test_three_char_model_must_read_three_characters():
    with pytest.raises(ValueError, match="exactly 3 characters"):
        MergeParams(
            kind="three_char", seq_len=4, embedding=4, hidden=8, epochs=1, batch_size=8, lr_schedule=[[0, 0.01]], seed=0
        )


def test_short_corpus_stops_training_before_tensorflow():
    ids = np.arange(5, dtype=np.int32)
    with pytest.raises(StageError, match="fewer than one sequence"):
        train(ids, ids, vocab_size=5, p=lstm_params(seq_len=64))


# ---------------------------------------------------------------- models


def test_three_char_model_shares_its_dense_layers_like_the_drawing():
    model = merge_model(vocab_size=20, seq_len=3, embedding=4, hidden=8)
    assert [t.name for t in model.inputs] == ["c1", "c2", "c3"]
    assert model.get_layer("dense_in").kernel.shape == (4, 8)  # one layer, applied to all three characters
    assert len({layer.name for layer in model.layers if layer.name.endswith("_embedding")}) == 3
    assert model.get_layer("dense_hidden").activation.__name__ == "tanh"
    out = model.predict([np.array([1, 2]), np.array([3, 4]), np.array([5, 6])], verbose=0)
    assert out.shape == (2, 20) and np.allclose(out.sum(axis=1), 1, atol=1e-5)


def test_unrolled_model_has_identity_hidden_init_and_loads_safely(tmp_path):
    model = merge_model(vocab_size=10, seq_len=8, embedding=4, hidden=6, unrolled=True)
    assert np.array_equal(model.get_layer("dense_hidden").kernel.numpy(), np.eye(6))
    save_keras(tmp_path / "m.keras", model)
    loaded = load_keras(tmp_path / "m.keras")
    x = [np.array([i % 10]) for i in range(8)]
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_simple_rnn_and_lstm_output_shapes():
    assert simple_rnn_model(10, 8, 4, 6).output.shape == (None, 10)
    assert lstm_model(10, 4, (6, 5), 0.1).output.shape == (None, None, 10)


# ---------------------------------------------------------------- evaluation


def test_uniform_model_scores_ln_vocab_once_per_token():
    model = lstm_model(vocab_size=7, embedding=3, units=(4,), dropout=0.0)
    dense = model.get_layer("next")
    dense.set_weights([np.zeros_like(w) for w in dense.get_weights()])  # softmax of zeros: uniform
    ids = np.arange(100) % 7
    loss, scored = validation_loss(model, ids, context=10)
    assert loss == pytest.approx(math.log(7), rel=1e-6)
    n_windows = (100 - 10 - 1) // 5 + 1
    assert scored == 10 + (n_windows - 1) * 5  # each token once: the first window whole, later ones their last half


def test_probe_skips_characters_outside_the_vocabulary():
    model = merge_model(vocab_size=3, seq_len=3, embedding=2, hidden=4)
    results = probe(model, ["a", "b", " "], [("ab", "a"), ("xy", "a")], word_level=False, context=3)
    assert results[0]["predicted"] in "ab " and "top3" in results[0]
    assert "not in vocabulary" in results[1]["skipped"]


def test_char_lstm_learns_a_repeating_text_and_samples_it():
    text = "philosophy cheap " * 80
    vocab = corpus.char_vocabulary(text)
    ids = corpus.encode_chars(text, vocab)
    model, history, speed = train(ids[:1200], ids[1200:], len(vocab), lstm_params(epochs=6, stride=3))
    assert history["val_loss"][-1] < history["val_loss"][0] and speed["train_tokens_per_s"] > 0
    p = EVALUATE.model_copy(update={"probes": [("philo", "s"), (" chea", "p")], "seed_text": "philosophy "})
    metrics, probes, samples = evaluate(model, ids[1200:], vocab, 12, False, p)
    assert metrics["val_loss"] < 0.5 and metrics["bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2))
    assert metrics["probes_correct"] == 2 and metrics["perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert set(samples) == {0.5, 1.0} and all(len(s) == len("philosophy ") + 15 for s in samples.values())
    assert samples[0.5].startswith("philosophy cheap philo")


def test_word_model_trains_and_never_samples_unknown_words():
    arrays, vocab, _ = prepare(generated_text(1500).encode(), PREPARE.model_copy(update={"max_words": 12}))
    p = lstm_params(kind="word_lstm", seq_len=8, epochs=1)
    model, _, _ = train(arrays["train_words"], arrays["valid_words"], len(vocab["words"]), p)
    metrics, probes, samples = evaluate(model, arrays["valid_words"], vocab["words"], 8, True, EVALUATE)
    assert "bits_per_word" in metrics and 0 < metrics["val_loss"] < 10
    assert probes[0]["prefix"] == "the will to" and "predicted" in probes[0]
    generated = [s.split(" ", 2)[2] for s in samples.values()]  # after the two seed words
    assert all(corpus.UNKNOWN_WORD not in s for s in generated)


def test_max_minutes_stops_inside_an_epoch_and_still_validates():
    ids = (np.arange(4000) % 7).astype(np.int32)
    _, history, speed = train(ids, ids[:200], 7, lstm_params(epochs=50, batch_size=4, max_minutes=1e-4))
    assert speed["epochs_run"] == 1 and 0 < speed["epochs_trained"] < 0.1 and len(history["val_loss"]) == 1
    assert speed["cut_short"] == 1


def test_the_default_budgets_are_epochs_not_minutes():
    """The same params must give the same model on any machine: no default training stops on wall-clock time."""
    from stages.text import params as text_params

    assert all(p.max_minutes is None for p in text_params.load().models.values())
