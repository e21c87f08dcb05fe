"""Plots of a model comparison (PNG, matplotlib's Agg canvas; matplotlib is imported lazily).

* ``dice_box.png``: box plot of the per-case (seed-averaged) score per model, with every case drawn as a point.
* ``pareto_flops.png`` / ``pareto_latency.png``: mean score against FLOPs / latency, Pareto front as a step line.
* ``cd_diagram.png`` (>= 3 models): critical-difference diagram after Demsar (2006): average ranks on an axis,
  the Nemenyi CD as a bar, and thick lines joining models whose ranks differ by less than the CD.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cd_diagram", "pareto_plot", "score_boxplot", "write_plots"]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("the comparison plots need matplotlib: pip install matplotlib") from err
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def score_boxplot(values: dict[str, Sequence[float]], path: Path, ylabel: str) -> None:
    """Box + strip plot of per-case values per model.

    Args:
        values: ``{model: (n_cases,) values}``; models without values are drawn empty.
        path: PNG file to write.
        ylabel: y-axis label.
    """
    models = list(values)
    fig = _figure(max(4.0, 1.2 * len(models) + 1.5), 4.0)
    ax = fig.add_subplot()
    data = [np.asarray(values[m], dtype=float) for m in models]
    ax.boxplot([d if d.size else [np.nan] for d in data], showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=12, alpha=0.6, color="tab:blue", zorder=3)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def pareto_plot(points: dict[str, Sequence[float]], front: Sequence[str], path: Path, xlabel: str,
                ylabel: str, intervals: dict[str, Sequence[float | None]] | None = None) -> None:
    """Score against cost, one labelled point per model, the Pareto front as a step line.

    Args:
        points: ``{model: (cost, score)}``.
        front: models on the front, sorted by cost.
        path: PNG file to write.
        xlabel, ylabel: axis labels (the x axis is logarithmic when every cost is positive).
        intervals: ``{model: (low, high)}`` of the score (its CI), drawn as vertical bars so that a difference the
            tests cannot tell apart does not look large on an axis zoomed to the points.
    """
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    for m, (c, s) in points.items():
        on = m in front
        lo, hi = (intervals or {}).get(m, (None, None))
        if lo is not None and hi is not None:
            ax.errorbar([c], [s], yerr=[[s - lo], [hi - s]], fmt="none", ecolor="tab:gray", elinewidth=1,
                        capsize=3, zorder=2)
        ax.scatter([c], [s], s=40, color="tab:red" if on else "tab:gray", zorder=3)
        ax.annotate(m, (c, s), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if front:
        xs = [points[m][0] for m in front]
        ys = [points[m][1] for m in front]
        ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    if points and all(c > 0 for c, _ in points.values()):
        ax.set_xscale("log")
    ax.margins(0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def cd_diagram(ranks: dict[str, float], cd: float, path: Path, title: str = "") -> None:
    """Critical-difference diagram (rank 1 = best, on the left).

    Args:
        ranks: ``{model: average rank}``.
        cd: Nemenyi critical difference.
        path: PNG file to write.
        title: figure title.
    """
    k = len(ranks)
    order = sorted(ranks, key=ranks.get)
    fig = _figure(7.0, 1.6 + 0.3 * k)
    ax = fig.add_subplot()
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(k + 2), 1.5)
    ax.axis("off")
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.2, color="black")
        ax.text(r, 0.35, str(r), ha="center", fontsize=8)
    ax.hlines(1.1, 1, 1 + cd, color="black", lw=2)
    ax.text(1 + cd / 2, 1.25, f"CD = {cd:.2f}", ha="center", fontsize=8)
    for i, m in enumerate(order):
        y = -(i + 1)
        left = i < (k + 1) // 2
        x_text = 0.6 if left else k + 0.4
        ax.plot([ranks[m], ranks[m], x_text], [0, y, y], color="black", lw=0.8)
        ax.text(x_text, y + 0.1, f"{m} ({ranks[m]:.2f})", ha="left" if left else "right", fontsize=8)
    cliques = []
    for i in range(k):  # maximal groups of consecutive models spanning less than the CD
        j = max(jj for jj in range(i, k) if ranks[order[jj]] - ranks[order[i]] < cd)
        if j > i and not any(a <= i and j <= b for a, b in cliques):
            cliques.append((i, j))
    for n, (i, j) in enumerate(cliques):
        y = -0.35 - 0.25 * n
        ax.hlines(y, ranks[order[i]] - 0.03, ranks[order[j]] + 0.03, color="tab:red", lw=3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(out_dir: Path, box_values: dict[str, Sequence[float]], score_metric: str, score_class: str,
                pareto: dict[str, Any], primary_test: dict[str, Any],
                score_ci: dict[str, Sequence[float | None]] | None = None) -> dict[str, str | None]:
    """Write every plot that the data allow (``score_ci``: ``{model: (low, high)}`` bars on the Pareto plots).

    Returns:
        ``{"dice_box", "pareto_flops", "pareto_latency", "cd_diagram"}`` -> file name, or None with the reason in
        ``"<name>_note"``.
    """
    images: dict[str, str | None] = {}
    label = f"{score_metric} ({score_class}, per case, seeds averaged)"
    if any(len(v) for v in box_values.values()):
        score_boxplot(box_values, out_dir / "dice_box.png", label)
        images["dice_box"] = "dice_box.png"
    else:
        images["dice_box"], images["dice_box_note"] = None, "no defined per-case values"
    for cost, name, xlabel in (("flops", "pareto_flops", "FLOPs per forward pass (incl. the scan)"),
                               ("latency_ms", "pareto_latency", "latency (ms)")):
        pts = pareto.get(cost, {}).get("points", {})
        if pts:
            pareto_plot(pts, pareto[cost]["front"], out_dir / f"{name}.png", xlabel,
                        f"mean {score_metric} (bars: CI)" if score_ci else f"mean {score_metric}", score_ci)
            images[name] = f"{name}.png"
        else:
            images[name], images[f"{name}_note"] = None, f"no {cost} in any efficiency.json"
    fr = primary_test.get("friedman")
    if fr is not None:
        cd_diagram(fr["average_ranks"], fr["nemenyi_cd"], out_dir / "cd_diagram.png",
                   f"{primary_test['metric']}, {primary_test['n_common']} cases, alpha = {primary_test['alpha']}")
        images["cd_diagram"] = "cd_diagram.png"
    else:
        images["cd_diagram"], images["cd_diagram_note"] = None, "needs >= 3 models with paired cases"
    return images
