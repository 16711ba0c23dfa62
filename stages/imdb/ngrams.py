"""imdb_ngrams: the NB-SVM model's most positive and most negative n-grams (CSV and a bar chart): what it learned,
as the t-SNE of the learned embeddings shows it for the neural models."""

from __future__ import annotations

from pathlib import Path

from stages.common.cli import run_stage
from stages.common.io import atomic_dir, load_keras, save_figure, write_csv
from stages.common.tracking import stage_run
from stages.imdb import params as imdb_params
from stages.imdb.nbsvm import strongest_ngrams
from stages.imdb.paths import MODEL, NBSVM, NGRAMS


def ngram_figure(table, title: str):
    import matplotlib.pyplot as plt

    shown = table.sort_values("weight")
    fig, ax = plt.subplots(figsize=(7, max(4.0, 0.22 * len(shown))))
    colors = ["tab:red" if w < 0 else "tab:green" for w in shown["weight"]]
    ax.barh(range(len(shown)), shown["weight"], color=colors)
    ax.set_yticks(range(len(shown)), shown["ngram"], fontsize=8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(title=title, xlabel="weight (log-odds of a positive review when the n-gram occurs)")
    return fig


def main() -> None:
    from stages.common.plots import close

    p = imdb_params.load().ngrams
    model_path = MODEL.format(name=NBSVM)
    table = strongest_ngrams(load_keras(model_path), p.n)
    with atomic_dir(NGRAMS) as out:
        write_csv(out / "ngrams.csv", table)
        fig = ngram_figure(table, f"IMDB {NBSVM}: the {p.n} most positive and most negative n-grams")
        save_figure(out / "ngrams.png", fig)
        close(fig)
    with stage_run("imdb", "imdb_ngrams", params=p.model_dump(), inputs=[model_path]) as run:
        for path in sorted(Path(NGRAMS).iterdir()):
            run.log_artifact(path, "ngrams")
    for sentiment, group in table.groupby("sentiment", sort=False):
        print(f"{sentiment:>8}: {', '.join(group['ngram'].head(12))}")


if __name__ == "__main__":
    run_stage(main)
