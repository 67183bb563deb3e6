"""Figures of the scaling-rule language-model experiment (docs/scaling.md): held-out loss against
samples seen per variant and δ, and the final losses per seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from optsde.figures import BASE_VARIANT, SCALING_VARIANT_STYLE
from optsde.report import keep_in_view
from optsde.scaling import SCALING_VARIANTS
from optsde.sde import Recording

Config = tuple[str, float]
"""(variant, δ); the base run is ``(BASE_VARIANT, 1.0)``."""


def finals(rec: Recording) -> np.ndarray:
    """Each seed's final held-out loss (nan for all when the run diverged)."""
    values = rec.values["eval_loss"]
    return np.full(rec.paths, math.nan) if rec.divergence is not None else values[-1]


def loss_figure(runs: dict[Config, Recording], batch: int, deltas: Sequence[float]) -> Figure:
    """Held-out loss (mean over seeds, band ± std) vs samples seen and vs steps, one row per δ."""
    fig, axes = plt.subplots(len(deltas), 2, figsize=(10, 3.0 * len(deltas)), squeeze=False, sharey=True)
    for row, delta in enumerate(deltas):
        shown = {k: r for k, r in runs.items() if k[0] == BASE_VARIANT or k[1] == delta}
        for col, unit in enumerate(("samples seen (windows)", "steps")):
            ax = axes[row, col]
            for (variant, d), rec in shown.items():
                values = rec.values["eval_loss"]
                x = rec.steps * (round(batch * d) if col == 0 else 1)
                mean, std = values.mean(axis=1), values.std(axis=1)
                style = SCALING_VARIANT_STYLE[variant]
                label = style["label"] + (
                    f" (diverged at step {rec.divergence.step})" if rec.divergence else ""
                )
                ax.plot(x, mean, lw=1.3, color=style["color"], label=label)
                ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, lw=0)
            # Leave out the first drop from ln 128 so the later differences show.
            late = [
                replace(r, values={"eval_loss": r.values["eval_loss"][2:]}, steps=r.steps[2:])
                for r in shown.values()
            ]
            keep_in_view(ax, late, "eval_loss", log=False)
            ax.set_xlabel(unit)
            ax.set_title(f"δ = {delta:g}: held-out loss vs {unit.split(' (')[0]}", fontsize=9)
            if col == 0:
                ax.set_ylabel("nats / character")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def final_figure(runs: dict[Config, Recording], deltas: Sequence[float]) -> Figure:
    """Final held-out loss per variant and δ: every seed as a dot, mean ± std as a bar."""
    variants = list(SCALING_VARIANTS)
    fig, axes = plt.subplots(1, len(deltas), figsize=(3.8 * len(deltas), 3.6), squeeze=False, sharey=True)
    base = finals(runs[(BASE_VARIANT, 1.0)])
    for ax, delta in zip(axes[0], deltas, strict=True):
        ax.axhspan(np.nanmean(base) - np.nanstd(base), np.nanmean(base) + np.nanstd(base), color="0.9", lw=0)
        ax.axhline(np.nanmean(base), color="black", lw=0.8, label="base (batch B), ± std")
        for i, variant in enumerate(variants):
            values = finals(runs[(variant, delta)])
            color = SCALING_VARIANT_STYLE[variant]["color"]
            ax.plot(np.full(len(values), i) + 0.12, values, "o", ms=3, color=color, alpha=0.6)
            ax.errorbar(i - 0.12, np.nanmean(values), yerr=np.nanstd(values), fmt="s", color=color, capsize=3)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"δ = {delta:g}", fontsize=9)
    axes[0, 0].set_ylabel("final held-out loss (nats/char)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("final loss at equal samples seen: seeds (dots), mean ± std (squares)", fontsize=10)
    fig.tight_layout()
    return fig
