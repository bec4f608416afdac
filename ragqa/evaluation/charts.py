"""PNG charts for evaluation reports (matplotlib, drawn off-screen: no display, no pyplot state).

``metric_chart``: one group of bars per metric, one bar per variant, 95% CI whiskers.
``latency_chart``: one horizontal bar per variant, stacked by pipeline stage (mean ms), labelled
with the variant's tokens/s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def metric_chart(summary: Mapping[str, Mapping], metrics: Sequence[tuple[str, str]], path: str | Path, *,
                 title: str = "", scale: float = 1.0, ylabel: str = "") -> Path:
    """Bars of ``summary[variant][metric]["mean"]`` (times ``scale``) with whiskers to its
    ``ci95``; ``metrics`` are (key, label) pairs. Metrics a variant lacks are left out."""
    import numpy as np

    variants = list(summary)
    metrics = [(k, label) for k, label in metrics if any(isinstance(summary[v].get(k), Mapping) for v in variants)]
    fig = _figure(max(5.0, 1.2 * len(metrics) * max(1, len(variants)) ** 0.5 + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        means, lo, hi = [], [], []
        for key, _ in metrics:
            m = summary[v].get(key) or {"mean": 0.0, "ci95": [0.0, 0.0]}
            means.append(scale * m["mean"])
            lo.append(scale * (m["mean"] - m["ci95"][0]))
            hi.append(scale * (m["ci95"][1] - m["mean"]))
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, means, width,
               yerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], capsize=3, label=v)
    ax.set_xticks(x, [label for _, label in metrics])
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (means, 95% bootstrap CI)" if title else "means, 95% bootstrap CI", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def latency_chart(summary: Mapping[str, Mapping], stages: Sequence[tuple[str, str]], path: str | Path, *,
                  title: str = "") -> Path:
    """Per variant, the mean ms of each stage in ``summary[variant]["latency"]`` stacked left to
    right; ``stages`` are (key, label) pairs."""
    variants = list(summary)
    fig = _figure(7.0, 1.8 + 0.6 * len(variants))
    ax = fig.add_subplot(1, 1, 1)
    left = [0.0] * len(variants)
    for key, label in stages:
        widths = [((summary[v].get("latency") or {}).get(key) or {}).get("mean") or 0.0 for v in variants]
        ax.barh(variants, widths, left=left, label=label)
        left = [a + b for a, b in zip(left, widths)]
    for y, v in enumerate(variants):
        tps = ((summary[v].get("latency") or {}).get("throughput") or {}).get("tokens_per_s")
        if tps:
            ax.text(left[y], y, f"  {tps:.1f} tok/s", va="center", fontsize=8)
    ax.set_xlim(0, max(left + [1.0]) * 1.25)
    ax.invert_yaxis()
    ax.set_xlabel("ms per answer (mean)")
    ax.set_title(title or "latency by stage", fontsize=10)
    ax.legend(fontsize=8, ncol=len(stages), loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
