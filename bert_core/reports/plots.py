"""The pictures of the reports, drawn with matplotlib (Agg, no display) as PNG bytes.

Every function returns a `Figure`: the PNG, its title and its axis labels (the page writes them as the
image's alt text and caption, so a reader and a test see what each picture shows). matplotlib is
imported here only, when a report is written: never on the training path.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Sequence

WIDTH, HEIGHT, DPI = 5.2, 3.2, 100  # inches: 520 x 320 pixels, two a row on a laptop screen


@dataclasses.dataclass(frozen=True)
class Figure:
    title: str
    xlabel: str
    ylabel: str
    png: bytes
    caption: str = ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _render(fig, ax, title: str, xlabel: str, ylabel: str, caption: str = "") -> Figure:
    plt = _pyplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return Figure(title, xlabel, ylabel, buf.getvalue(), caption)


def _axes(width: float = WIDTH, height: float = HEIGHT):
    return _pyplot().subplots(figsize=(width, height))


def lines(title: str, xlabel: str, ylabel: str, curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
          caption: str = "", steps: bool = False) -> Figure:
    """One or more (label, x, y) curves on one pair of axes (a legend when there are several);
    `steps`: each value holds from its x to the next (a score over thresholds)."""
    fig, ax = _axes()
    for label, x, y in curves:
        ax.plot(x, y, marker="." if len(x) < 30 else None, label=label, drawstyle="steps-post" if steps else "default")
    if len(curves) > 1:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _render(fig, ax, title, xlabel, ylabel, caption)


def histogram(title: str, xlabel: str, values: Sequence[float], bins: int | Sequence[float] = 30,
              caption: str = "", ylabel: str = "instances", weights: Sequence[float] | None = None) -> Figure:
    """`weights`: how many times each value counts (a histogram from counts rather than values)."""
    fig, ax = _axes()
    ax.hist(values, bins=bins, weights=weights, color="#4c72b0", edgecolor="white")
    ax.grid(alpha=0.3, axis="y")
    return _render(fig, ax, title, xlabel, ylabel, caption)


def bars(title: str, xlabel: str, ylabel: str, names: Sequence[str], groups: dict[str, Sequence[float]],
         caption: str = "") -> Figure:
    """Grouped bars: one group per name, one bar per series in `groups` ({series: value per name})."""
    import numpy as np

    fig, ax = _axes()
    x = np.arange(len(names))
    width = 0.8 / max(len(groups), 1)
    for i, (series, values) in enumerate(groups.items()):
        drawn = ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=series)
        ax.bar_label(drawn, fmt="%.4g", fontsize="x-small")
    ax.set_xticks(x, names)
    if len(groups) > 1:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return _render(fig, ax, title, xlabel, ylabel, caption)


def confusion_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]], caption: str = "") -> Figure:
    """Counts as a heat map, gold labels down, predicted across, each cell's count written in it."""
    import numpy as np

    m = np.asarray(matrix)
    side = max(3.2, 1.0 + 0.6 * len(labels))
    fig, ax = _axes(side + 1.0, side)
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 4 else 0)
    ax.set_yticks(range(len(labels)), labels)
    threshold = m.max() / 2 if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > threshold else "black")
    return _render(fig, ax, "Confusion matrix", "predicted label", "gold label", caption)


def roc(fpr: Sequence[float], tpr: Sequence[float], auc: float, caption: str = "") -> Figure:
    fig, ax = _axes(4.2, 3.6)
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return _render(fig, ax, "ROC curve", "false positive rate", "true positive rate", caption)


def scatter(gold: Sequence[float], predicted: Sequence[float], caption: str = "") -> Figure:
    """Predicted against gold (regression), with the line predicted = gold."""
    fig, ax = _axes(4.2, 3.6)
    ax.scatter(gold, predicted, s=8, alpha=0.6)
    low, high = min(min(gold), min(predicted)), max(max(gold), max(predicted))
    ax.plot([low, high], [low, high], linestyle="--", color="grey")
    ax.grid(alpha=0.3)
    return _render(fig, ax, "Predicted vs gold", "gold score", "predicted score", caption)
