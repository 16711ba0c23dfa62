"""Matplotlib figures shared by the workloads (headless backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(rows: list[dict[str, float]], title: str, metrics: list[str] | None = None):
    keys = metrics or sorted({k for r in rows for k in r if k not in ("epoch", "learning_rate")})
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in rows]
    for key in keys:
        ax.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=key)
    ax.set(xlabel="epoch", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def confusion_matrix_figure(matrix: np.ndarray, labels: list[str], title: str):
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value}", ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    return fig


def labelled_scatter(
    x: np.ndarray,
    y: np.ndarray,
    labels: list[str],
    title: str,
    xlabel: str,
    ylabel: str,
    figsize: tuple[float, float] = (14, 14),
):
    fig, ax = plt.subplots(figsize=figsize)
    ax.scatter(x, y, s=8, alpha=0.6)
    for xi, yi, label in zip(x, y, labels):
        ax.annotate(label, (xi, yi), fontsize=7, alpha=0.85, xytext=(2, 2), textcoords="offset points")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def close(fig) -> None:
    plt.close(fig)
