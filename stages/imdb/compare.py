"""imdb_compare: one table of the models' test figures beside fast.ai's 2017 numbers and, where the benchmark
records hold them (benchmarks/results/imdb.json), the mean and spread over seeds and the best single seed.

Training speeds are left out: they vary from run to run (data/imdb/timings/), and the table must not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.io import atomic_dir, read_json, write_csv, write_text
from stages.common.tracking import stage_run
from stages.imdb import params as imdb_params
from stages.imdb.paths import BENCHMARK_RECORDS, COMPARISON, METRICS_DIR, NBSVM


def seed_statistics(records: list[dict], name: str) -> dict[str, float | None]:
    """The benchmark's figures of model `name` over seeds (in %): mean, std, best seed, fast.ai's protocol mean."""
    by_figure = {r["figure"]: r for r in records}
    honest, fastai_protocol = (
        by_figure.get(f"imdb.{name}.test_accuracy"),
        by_figure.get(f"imdb.{name}.test_accuracy_fastai_protocol"),
    )
    return {
        "seeds_mean": honest["value"] if honest else None,
        "seeds_std": honest["spread"] if honest else None,
        "n_seeds": len(honest["seeds"]) if honest and honest["seeds"] else None,
        "best_seed": max(honest["per_seed"]) if honest and honest.get("per_seed") else None,
        "fastai_protocol_mean": fastai_protocol["value"] if fastai_protocol else None,
    }


def comparison(
    models: list[str], fastai: dict[str, float], metrics_dir: str | Path = METRICS_DIR, records: list[dict] = ()
) -> pd.DataFrame:
    """Pure step: one row per model from its train_<model>.json and <model>.json, with its seed statistics."""
    rows = []
    for name in models:
        train_file, test_file = Path(metrics_dir) / f"train_{name}.json", Path(metrics_dir) / f"{name}.json"
        if not (train_file.is_file() and test_file.is_file()):
            stages = (
                "imdb_nbsvm and imdb_nbsvm_evaluate" if name == NBSVM else f"imdb_train@{name} and imdb_evaluate@{name}"
            )
            raise StageError(f"{train_file} or {test_file} missing: run {stages}")
        trained, tested = read_json(train_file), read_json(test_file)
        rows.append(
            {
                "model": name,
                "fastai_2017_accuracy": fastai.get(name),
                "test_accuracy": tested["test_accuracy"],
                "test_roc_auc": tested["test_roc_auc"],
                "test_log_loss": tested["test_log_loss"],
                "best_val_accuracy": trained["best_val_accuracy"],
                "best_epoch": trained["best_epoch"],
                "epochs": trained["epochs"],
                **seed_statistics(list(records), name),
            }
        )
    table = pd.DataFrame(rows)
    table["vs_fastai"] = table["test_accuracy"] - table["fastai_2017_accuracy"]
    return table


def _percent(value) -> str:
    return f"{value:.2f}%" if pd.notna(value) else "-"


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| model | fast.ai 2017 (best epoch on test) | this run: test accuracy (epoch chosen on validation) "
        "| vs fast.ai | over seeds: mean ± std (n) | best seed | fast.ai's protocol over seeds | ROC AUC | log loss "
        "| best epoch / epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        fastai = f"{r.fastai_2017_accuracy:.2%}" if pd.notna(r.fastai_2017_accuracy) else "-"
        delta = f"{r.vs_fastai * 100:+.2f} pt" if pd.notna(r.vs_fastai) else "-"
        seeds = f"{r.seeds_mean:.2f} ± {r.seeds_std:.2f}% ({r.n_seeds:.0f})" if pd.notna(r.seeds_mean) else "-"
        lines.append(
            f"| {r.model} | {fastai} | {r.test_accuracy:.2%} | {delta} | {seeds} | {_percent(r.best_seed)} "
            f"| {_percent(r.fastai_protocol_mean)} | {r.test_roc_auc:.4f} | {r.test_log_loss:.4f} "
            f"| {r.best_epoch} / {r.epochs} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = imdb_params.load()
    records = read_json(BENCHMARK_RECORDS) if Path(BENCHMARK_RECORDS).is_file() else []
    table = comparison([*p.models, NBSVM], p.fastai_test_accuracy, records=records)
    text = markdown(table)
    with atomic_dir(COMPARISON) as out:
        write_csv(out / "comparison.csv", table)
        write_text(out / "comparison.md", text)
    with stage_run("imdb", "imdb_compare", inputs=[METRICS_DIR]) as run:
        run.log_artifact(f"{COMPARISON}/comparison.md", "comparison")
    print(text, end="")


if __name__ == "__main__":
    run_stage(main)
