"""text_evaluate@<model>: validation loss, perplexity and bits per token; next-token probes; generated text."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, load_keras, write_json, write_text
from stages.common.params import pick_model
from stages.text import corpus
from stages.text import params as text_params
from stages.text.corpus import load_tokens
from stages.text.models import fixed_context, model_inputs, predicts_every_position
from stages.text.params import EvaluateParams, is_word_model, per_unit_names
from stages.text.paths import METRICS, MODEL, PREPARED, SAMPLES


def validation_loss(model, ids: np.ndarray, context: int, batch_size: int = 256) -> tuple[float, int]:
    """(mean nats per scored token, tokens scored) on the held-out ids.

    Fixed-context models score every token that has a full context (windows at stride 1). Sequence models read
    windows of `context` tokens overlapping by half and score each token once, with at least context//2 tokens
    before it (the first window scores all its positions), so early positions with no context do not dominate.
    """
    every = predicts_every_position(model)
    if every:
        warm = context // 2
        x, y = corpus.sequences(ids, context, context - warm, "the validation tail")
        scored = np.ones(y.shape, bool)
        scored[1:, :warm] = False
    else:
        x, y = corpus.sequences(ids, fixed_context(model), 1, "the validation tail")
        y = y[:, -1]
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        probs = np.asarray(model.predict_on_batch(model_inputs(model, x[start : start + batch_size])), np.float64)
        target = y[start : start + batch_size]
        nll = -np.log(np.maximum(np.take_along_axis(probs, target[..., None], axis=-1)[..., 0], 1e-12))
        if every:
            nll = nll[scored[start : start + batch_size]]
        total += float(nll.sum())
        count += nll.size
    return total / count, count


def next_distribution(model, windows: list[list[int]], pad_id: int, context: int) -> np.ndarray:
    """Next-token probabilities (rows) after the last `context` ids of each list (the fixed-context models: theirs).

    Shorter lists are left-padded with `pad_id`: one input shape, so TensorFlow traces the model once.
    """
    length = fixed_context(model) or context
    rows = [([pad_id] * length + ids)[-length:] for ids in windows]
    probs = np.asarray(model.predict_on_batch(model_inputs(model, np.array(rows, np.int32))), np.float64)
    return probs[:, -1] if predicts_every_position(model) else probs


def probe(model, vocab: list[str], probes: list[tuple[str, str]], word_level: bool, context: int) -> list[dict]:
    """The most likely next token after each prefix; a probe using characters outside the vocabulary is skipped."""
    index = {t: i for i, t in enumerate(vocab)}
    results = []
    for prefix, expected in probes:
        tokens = corpus.words(prefix) if word_level else list(prefix)
        unknown = sorted({t for t in [*tokens, expected] if t not in index})
        if unknown and not word_level:
            print(f"probe {prefix!r}: skipped, character(s) {unknown} not in the vocabulary")
            results.append({"prefix": prefix, "expected": expected, "skipped": f"not in vocabulary: {unknown}"})
            continue
        ids = [index.get(t, 0) for t in tokens]  # words outside the vocabulary are <unk> (id 0)
        dist = next_distribution(model, [ids], index.get(" ", 0), context)[0]
        top = np.argsort(dist)[::-1][:3]
        p_expected = float(dist[index[expected]]) if expected in index else 0.0
        results.append(
            {
                "prefix": prefix,
                "expected": expected,
                "predicted": vocab[top[0]],
                "correct": vocab[top[0]] == expected,
                "p_expected": p_expected,
                "top3": {vocab[i]: float(dist[i]) for i in top},
            }
        )
    return results


def generate(
    model,
    seed_ids: list[int],
    length: int,
    temperatures: list[float],
    context: int,
    pad_id: int,
    rng: np.random.Generator,
    banned: tuple[int, ...] = (),
) -> list[list[int]]:
    """Sample `length` tokens after `seed_ids` at each temperature (one batch row per temperature)."""
    sequences = [list(seed_ids) for _ in temperatures]
    inverse_t = 1.0 / np.array(temperatures)[:, None]
    for _ in range(length):
        logits = np.log(np.maximum(next_distribution(model, sequences, pad_id, context), 1e-12)) * inverse_t
        logits[:, list(banned)] = -np.inf
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for row, seq in zip(probs, sequences):
            seq.append(int(rng.choice(len(row), p=row)))
    return [seq[len(seed_ids) :] for seq in sequences]


def evaluate(model, valid_ids: np.ndarray, vocab: list[str], context: int, word_level: bool, p: EvaluateParams):
    """Pure step: (metrics, probe results, {temperature: generated text})."""
    loss, scored = validation_loss(model, valid_ids, context)
    unit = "word" if word_level else "char"
    metrics = {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        f"bits_per_{unit}": loss / math.log(2),
        "n_scored": scored,
        "context": fixed_context(model) or context,
    }
    probes = probe(model, vocab, p.word_probes if word_level else p.probes, word_level, context)
    answered = [r for r in probes if "skipped" not in r]
    metrics.update(probes_correct=sum(r["correct"] for r in answered), probes_answered=len(answered))

    index = {t: i for i, t in enumerate(vocab)}
    seed_tokens = corpus.words(p.seed_text) if word_level else list(p.seed_text)
    seed_ids = [index.get(t, 0) for t in seed_tokens if word_level or t in index]
    if len(seed_ids) < len(seed_tokens):
        print(f"seed_text: {len(seed_tokens) - len(seed_ids)} character(s) outside the vocabulary left out")
    if not seed_ids:
        raise StageError(f"text.evaluate.seed_text {p.seed_text!r} has no {unit} of the vocabulary: change it")
    generated = generate(
        model,
        seed_ids,
        p.sample_length,
        p.temperatures,
        context,
        index.get(" ", 0),
        np.random.default_rng(p.seed),
        banned=(0,) if word_level else (),
    )
    join = corpus.join_words if word_level else "".join
    samples = {
        t: join([vocab[i] for i in seed_ids]) + (" " if word_level else "") + join([vocab[i] for i in ids])
        for t, ids in zip(p.temperatures, generated)
    }
    return metrics, probes, samples


def main(name: str) -> None:
    from stages.common.tracking import stage_run

    p = text_params.load()
    mp = pick_model(p.models, name, "text.models")
    word_level = is_word_model(mp)
    _, valid_ids, vocab = load_tokens(word_level)
    model_path = MODEL.format(name=name)
    metrics, probes, samples = evaluate(load_keras(model_path), valid_ids, vocab, mp.seq_len, word_level, p.evaluate)
    out_dir = SAMPLES.format(name=name)
    with atomic_dir(out_dir) as out:
        write_json(out / "probes.json", probes)
        for t, text in samples.items():
            write_text(out / f"temperature_{t}.txt", text + "\n")
    write_json(METRICS.format(name=name), metrics)
    with stage_run(
        "text",
        f"text_evaluate@{name}",
        params={"model": name, **p.evaluate.model_dump()},
        inputs=[PREPARED, model_path],
    ) as run:
        unit = "word" if word_level else "char"
        run.rename_metrics(per_unit_names(unit))
        run.log_metrics(metrics)
        sample_files = {f"samples/{path.name}": path for path in sorted(Path(out_dir).iterdir())}
        for artifact_file, path in sample_files.items():
            run.log_artifact_as(path, artifact_file)
        run.log_onto_training_run("text", model_path, metrics, sample_files)
        if not word_level:  # losses per character and per word do not compare: the champion is a character model
            run.offer_champion("text", model_path, ("val_loss_per_char", metrics["val_loss"]), False)
    print(
        f"{name}: validation loss {metrics['val_loss']:.4f} nats/{unit}, perplexity {metrics['perplexity']:.2f}, "
        f"{metrics[f'bits_per_{unit}']:.3f} bits/{unit} ({metrics['n_scored']:,} {unit}s scored)"
    )
    for r in probes:
        print(
            f"  {r['prefix']!r} -> "
            + (r.get("skipped") or f"{r['predicted']!r} (expected {r['expected']!r}, p={r['p_expected']:.2f})")
        )
    for t, text in samples.items():
        print(f"  temperature {t}: {text[:160]!r}")


if __name__ == "__main__":
    run_stage(main, sys.argv[1])
