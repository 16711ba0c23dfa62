"""Text benchmark on the real corpus: validation loss per model (mean and spread over seeds) and training throughput.

    LESSON5_MIRROR=../shared/data python -m benchmarks.text [--models char_lstm] [--seeds 1 2 3]

Each seed seeds the model's initialisation and batch order (the held-out tail is fixed). Losses are the evaluate
stage's: nats per character (per word for word models) on the held-out tail.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from benchmarks.common import benchmark_command, mean_and_spread, mean_spread, record_result, require_mirror
from stages.common.download import fetch
from stages.text import params as text_params
from stages.text.evaluate import validation_loss
from stages.text.params import is_word_model
from stages.text.prepare import prepare
from stages.text.train import train

FASTAI_TRAIN_LOSS = 1.22  # fast.ai's char LSTM (2x512, GPU): training loss, not validation
GOAL_VAL_LOSS = "<= 1.33 (goal); fast.ai: training loss 1.22 (2x512, GPU)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="models from params.yaml text.models (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    require_mirror()
    command = benchmark_command("benchmarks.text", argv)
    p = text_params.load()
    names = args.models or list(p.models)
    unknown = [n for n in names if n not in p.models]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}: choose from {', '.join(p.models)}")

    raw = Path(tempfile.mkdtemp(prefix="text-raw-")) / "corpus.txt"
    fetch(p.source, raw)
    started = time.perf_counter()
    arrays, vocab, stats = prepare(raw.read_bytes(), p.prepare, where=str(raw))
    print(
        f"prepare: {time.perf_counter() - started:.1f}s; {stats['chars']:,} chars, {stats['char_vocab']} distinct, "
        f"{stats['repaired_chars']} repaired, {stats['replaced_bytes']} replaced; "
        f"{stats['n_valid_chars']:,} held out"
    )

    rows = []
    for name in names:
        mp = p.models[name]
        unit = "words" if is_word_model(mp) else "chars"
        losses, train_losses, speeds, minutes = [], [], [], []
        for seed in args.seeds:
            model, history, speed = train(
                arrays[f"train_{unit}"], arrays[f"valid_{unit}"], len(vocab[unit]), mp.model_copy(update={"seed": seed})
            )
            loss, _ = validation_loss(model, arrays[f"valid_{unit}"], mp.seq_len)
            losses.append(loss)
            train_losses.append(float(history["loss"][-1]))
            speeds.append(speed["train_tokens_per_s"])
            minutes.append(speed["train_seconds"] / 60)
            print(
                f"  {name} seed {seed}: val loss {loss:.4f} nats/{unit[:-1]} ({loss / math.log(2):.3f} bits), "
                f"final training loss {train_losses[-1]:.4f}, {speed['epochs_trained']:.2f} epochs in "
                f"{minutes[-1]:.1f} min, "
                f"{speeds[-1]:,.0f} {unit}/s",
                flush=True,
            )
        rows.append((name, unit, losses, train_losses, speeds, minutes))

    print("\nText models on the held-out 10% (seeds " + " ".join(map(str, args.seeds)) + "):")
    for name, unit, losses, train_losses, speeds, minutes in rows:
        print(
            f"  {name:<12} val loss {mean_spread(losses)} nats/{unit[:-1]}; perplexity "
            f"{math.exp(sum(losses) / len(losses)):.2f}; training loss {mean_spread(train_losses)}; "
            f"{sum(speeds) / len(speeds):,.0f} {unit}/s; {sum(minutes) / len(minutes):.1f} min of training"
        )
        for figure, values, what, figure_unit, digits, goal in (
            (
                "val_loss",
                losses,
                "validation loss on the held-out 10%",
                f"nats/{unit[:-1]}",
                4,
                GOAL_VAL_LOSS if name == "char_lstm" else None,
            ),
            (
                "train_loss",
                train_losses,
                "final training loss",
                f"nats/{unit[:-1]}",
                4,
                FASTAI_TRAIN_LOSS if name == "char_lstm" else None,
            ),
            ("tokens_per_s", speeds, "training throughput", f"{unit}/s", None, None),
            ("train_minutes", minutes, "minutes of training", "min", 1, None),
        ):
            mean, std = mean_and_spread(values, digits)
            record_result(
                "text",
                f"text.{name}.{figure}",
                mean,
                description=f"{name} {what}",
                unit=figure_unit,
                spread=std,
                seeds=args.seeds,
                per_seed=[round(v, digits) for v in values],
                fastai=goal,
                command=command,
                note=f"perplexity {math.exp(sum(losses) / len(losses)):.2f}" if figure == "val_loss" else None,
            )
        if name == "char_lstm":
            mean = sum(train_losses) / len(train_losses)
            print(
                f"  char_lstm final training loss {mean:.4f} vs fast.ai's {FASTAI_TRAIN_LOSS} (2x512 LSTM on a GPU); "
                f"validation loss {sum(losses) / len(losses):.4f} vs the 1.33 target"
            )


if __name__ == "__main__":
    main()
