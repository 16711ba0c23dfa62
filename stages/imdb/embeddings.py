"""imdb_embeddings: t-SNE of the best IMDB model's learned word embedding, and a nearest-neighbour table
for probe words in that embedding and in GloVe (both over the IMDB vocabulary)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stages.common.cli import StageError, run_stage
from stages.common.embedding_maps import map_figure, tsne_map
from stages.common.io import atomic_dir, load_keras, load_npy, read_json, save_figure, write_csv, write_json
from stages.common.tracking import stage_run
from stages.imdb import params as imdb_params
from stages.imdb.params import ImdbParams
from stages.imdb.paths import EMBEDDINGS, GLOVE, GLOVE_EMBEDDING, IN_GLOVE, METRICS_DIR, MODEL, VOCAB


def choose_model(p: ImdbParams, metrics_dir: str | Path = METRICS_DIR) -> str:
    """The configured model, or ('auto') the best validation accuracy among models that trained their embedding."""
    if p.embeddings.model != "auto":
        return p.embeddings.model
    candidates = {}
    for name, mp in p.models.items():
        path = Path(metrics_dir) / f"train_{name}.json"
        learned = any(phase.train_embedding for phase in mp.phases)
        if learned and path.is_file():
            candidates[name] = read_json(path)["best_val_accuracy"]
    if not candidates:
        raise StageError(
            f"no trained model with a learned embedding under {metrics_dir}: run imdb_train first, "
            "or set imdb.embeddings.model"
        )
    return max(candidates, key=candidates.get)


def nearest_neighbours(
    matrix: np.ndarray, vocab: list[str], usable: np.ndarray, probes: list[str], n: int, source: str
) -> tuple[pd.DataFrame, list[str]]:
    """(probe, embedding, rank, word, cosine) rows for each probe in the vocabulary; probes not found are returned.

    Row i of `matrix` is vocabulary word i-1 (row 0 is padding); rows where `usable` is False are ignored.
    """
    index = {word: i for i, word in enumerate(vocab, start=1)}
    unit = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    rows, missing = [], []
    for probe in probes:
        row = index.get(probe)
        if row is None or not usable[row]:
            missing.append(probe)
            continue
        cosine = unit @ unit[row]
        cosine[~usable] = -np.inf
        cosine[row] = -np.inf
        for rank, other in enumerate(np.argsort(-cosine)[:n], start=1):
            rows.append(
                {
                    "probe": probe,
                    "embedding": source,
                    "rank": rank,
                    "word": vocab[other - 1],
                    "cosine": float(cosine[other]),
                }
            )
    return pd.DataFrame(rows, columns=["probe", "embedding", "rank", "word", "cosine"]), missing


def main() -> None:
    import stages.imdb.models  # noqa: F401  registers the custom embedding layer for loading
    from stages.common.plots import close

    p = imdb_params.load()
    e = p.embeddings
    name = choose_model(p)
    model_path = MODEL.format(name=name)
    learned = load_keras(model_path).get_layer("embedding").get_weights()[0]
    vocab = pd.read_csv(VOCAB, keep_default_na=False)["word"].astype(str).tolist()
    words = vocab[: e.n_words]
    coords = tsne_map(words, learned[1 : len(words) + 1], e.perplexity, e.seed)

    usable = np.zeros(len(learned), dtype=bool)
    usable[1 : len(vocab) + 1] = True  # neither padding nor the shared rare-word row
    tables, missing = [], set()
    for source, matrix, rows in [
        (f"learned:{name}", learned, usable),
        ("glove", load_npy(GLOVE_EMBEDDING), load_npy(IN_GLOVE)),
    ]:
        table, absent = nearest_neighbours(matrix, vocab, rows & usable, e.probes, e.n_neighbours, source)
        tables.append(table)
        missing.update(absent)
    if missing:
        print(
            f"skipped probe word(s) not in the vocabulary (or not in GloVe): {', '.join(sorted(missing))}",
            file=sys.stderr,
        )
    neighbours = pd.concat(tables, ignore_index=True)
    with atomic_dir(EMBEDDINGS) as out:
        write_csv(out / "tsne.csv", coords)
        write_csv(out / "neighbours.csv", neighbours)
        write_json(out / "summary.json", {"model": name, "n_words": len(words), "skipped_probes": sorted(missing)})
        fig = map_figure(
            coords,
            e.n_labelled,
            f"IMDB {name}: t-SNE of the learned embedding, {len(words)} most "
            f"frequent words ({min(e.n_labelled, len(words))} shown)",
        )
        save_figure(out / "tsne.png", fig)
        close(fig)
    with stage_run("imdb", "imdb_embeddings", params=e.model_dump(), inputs=[model_path, VOCAB, GLOVE]) as run:
        for path in sorted(Path(EMBEDDINGS).iterdir()):
            run.log_artifact(path, "embeddings")
    for (probe, source), group in neighbours.groupby(["probe", "embedding"], sort=False):
        print(f"{probe:>10} [{source}]: {', '.join(group['word'].head(6))}")


if __name__ == "__main__":
    run_stage(main)
