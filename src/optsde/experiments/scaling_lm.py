"""Experiment ``scaling-rule-lm``: batch-size scaling rules for AdamW on a small character-level GPT
(docs/theory.md §6, §7 "beyond the figures": the poster's Pythia validation at a scale we can run).

A :class:`~optsde.problems.charlm.TinyGPT` trains with ``torch.optim.AdamW`` on the Python
standard library's source (read offline, :func:`~optsde.problems.charlm.stdlib_corpus`) at batch
``B`` and at ``δB`` under the four :data:`optsde.scaling.SCALING_VARIANTS`.  Every run sees the
same number of samples (``steps`` at ``B``, ``steps/δ`` at ``δB``), so the loss against samples
seen shows what a larger batch costs or saves per example.  Each seed fixes the initial
weights, shared by every variant, so differences from the base run are paired.  Losses are in
nats per character on held-out files.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats

from optsde.experiments.base import Context, ExperimentError, experiment
from optsde.experiments.scaling_quadratic import BASE, VARIANT_STYLE
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.charlm import (
    Corpus,
    TinyGPT,
    evaluation_loss,
    evenly_spaced_windows,
    next_character_loss,
    random_windows,
    stdlib_corpus,
)
from optsde.progress import Progress, progress
from optsde.scaling import SCALING_VARIANTS, variant_hyperparameters


@dataclass(frozen=True)
class ModelShape:
    context: int
    width: int
    layers: int
    heads: int

    def build(self, seed: int, device: torch.device) -> TinyGPT:
        """The initial model of ``seed``: the same weights for every variant of that seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TinyGPT(self.context, self.width, self.layers, self.heads)
        return model.to(device)


@dataclass
class TrainingRun:
    """One training run: held-out loss at the evaluation points, train loss between them."""

    variant: str
    delta: float
    seed: int
    batch: int
    hp: Hyperparameters
    steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    diverged_at: int | None = None

    @property
    def samples(self) -> np.ndarray:
        return np.asarray(self.steps) * self.batch

    @property
    def final(self) -> float:
        return self.eval_loss[-1] if self.diverged_at is None else math.nan


def train(
    model: TinyGPT,
    corpus: Corpus,
    eval_windows: torch.Tensor,
    run: TrainingRun,
    total_steps: int,
    eval_steps: Sequence[int],
    generator: torch.Generator,
) -> TrainingRun:
    """AdamW with ``run.hp`` on batches of ``run.batch`` random windows for ``total_steps`` steps.

    Decay applies to the matrices (weights, embeddings, position table) and not to biases
    or LayerNorm gains, as in GPT-2 practice.
    """
    hp = run.hp
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": hp.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=hp.lr,
        betas=(hp.beta1, hp.beta2),
        eps=hp.eps,
    )
    wanted = set(eval_steps)
    running: list[torch.Tensor] = []
    if 0 in wanted:
        run.steps.append(0)
        run.eval_loss.append(evaluation_loss(model, eval_windows))
        run.train_loss.append(math.nan)
    for step in range(1, total_steps + 1):
        windows = random_windows(corpus.train, run.batch, model.context, generator)
        loss = next_character_loss(model, windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.detach())
        if step in wanted:
            train_mean = float(torch.stack(running).mean())
            running.clear()
            if not math.isfinite(train_mean):
                run.diverged_at = step
                break
            run.steps.append(step)
            run.eval_loss.append(evaluation_loss(model, eval_windows))
            run.train_loss.append(train_mean)
    return run


def evaluation_steps(total_steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps plus 0: the same sample counts for every batch size."""
    return sorted({round(k * total_steps / points) for k in range(points + 1)})


def seed_statistics(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard deviation (ddof 1) and count of the finite values."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return float(finite.mean()), std, int(finite.size)


def paired_difference(runs: Sequence[TrainingRun], bases: Sequence[TrainingRun]) -> tuple[float, float, int]:
    """Final held-out loss minus the same seed's base run: mean and its SE over seeds."""
    diffs = [r.final - b.final for r, b in zip(runs, bases, strict=True)]
    mean, std, n = seed_statistics(diffs)
    return mean, (std / math.sqrt(n) if n > 1 else math.nan), n


def curve_gap(runs: Sequence[TrainingRun], bases: Sequence[TrainingRun]) -> tuple[float, float, int]:
    """Mean over evaluation points (after 0) of the held-out loss minus the base's at the same samples
    seen, paired by seed: mean and SE over seeds.  Zero means the loss-vs-samples curve is kept."""
    gaps = []
    for r, b in zip(runs, bases, strict=True):
        n = min(len(r.eval_loss), len(b.eval_loss))
        if r.diverged_at is None and n > 1:
            gaps.append(float(np.mean(np.subtract(r.eval_loss[1:n], b.eval_loss[1:n]))))
    mean, std, n = seed_statistics(gaps)
    return mean, (std / math.sqrt(n) if n > 1 else math.nan), n


def describe_difference(mean: float, se: float, n: int) -> str:
    """``+0.012 ± 0.004`` (± SE over ``n`` seeds) and whether a 95% Student-t interval excludes zero
    (with few seeds the SE itself is uncertain: t = 4.3 at n = 3, not 2)."""
    if not math.isfinite(mean):
        return "n/a"
    if n < 2 or not math.isfinite(se):
        return f"{mean:+.3f} (one seed, no error bar)"
    half_width = float(stats.t.ppf(0.975, n - 1)) * se
    word = "indistinguishable" if abs(mean) <= half_width else ("higher" if mean > 0 else "lower")
    return f"{mean:+.3f} ± {se:.3f} ({word})"


def _visible_range(groups: dict[tuple[str, float], list[TrainingRun]]) -> tuple[float, float]:
    """A y-range that leaves out the first drop from ln 128 so the later differences show: from the
    lowest loss to the highest one after the second evaluation point."""
    late = [v for runs in groups.values() for r in runs if r.diverged_at is None for v in r.eval_loss[2:]]
    if not late:
        return 0.0, math.log(128)
    low, high = min(late), max(late)
    margin = 0.05 * (high - low) + 1e-3
    return low - margin, high + margin


def loss_figure(groups: dict[tuple[str, float], list[TrainingRun]], deltas: Sequence[float]) -> Figure:
    """Held-out loss (mean over seeds, band ± std) vs samples seen and vs steps, one row per δ."""
    fig, axes = plt.subplots(len(deltas), 2, figsize=(10, 3.0 * len(deltas)), squeeze=False, sharey=True)
    limits = _visible_range(groups)
    for row, delta in enumerate(deltas):
        for col, unit in enumerate(("samples seen", "steps")):
            ax = axes[row, col]
            for (variant, d), runs in groups.items():
                if variant != BASE and d != delta:
                    continue
                ok = [r for r in runs if r.diverged_at is None]
                if not ok:
                    continue
                values = np.asarray([r.eval_loss for r in ok])
                x = ok[0].samples if col == 0 else np.asarray(ok[0].steps)
                mean, std = values.mean(axis=0), values.std(axis=0)
                style = VARIANT_STYLE[variant]
                ax.plot(x, mean, lw=1.3, **style)
                ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, lw=0)
            ax.set_xlabel(unit if col else "samples seen (windows)")
            ax.set_title(f"δ = {delta:g}: held-out loss vs {unit}", fontsize=9)
            ax.set_ylim(*limits)
            if col == 0:
                ax.set_ylabel("nats / character")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def final_figure(groups: dict[tuple[str, float], list[TrainingRun]], deltas: Sequence[float]) -> Figure:
    """Final held-out loss per variant and δ: every seed as a dot, mean ± std as a bar."""
    variants = list(SCALING_VARIANTS)
    fig, axes = plt.subplots(1, len(deltas), figsize=(3.8 * len(deltas), 3.6), squeeze=False, sharey=True)
    base_mean, base_std, _ = seed_statistics([r.final for r in groups[(BASE, 1.0)]])
    for ax, delta in zip(axes[0], deltas, strict=True):
        ax.axhspan(base_mean - base_std, base_mean + base_std, color="0.9", lw=0)
        ax.axhline(base_mean, color="black", lw=0.8, label="base (batch B), ± std")
        for i, variant in enumerate(variants):
            finals = [r.final for r in groups[(variant, delta)]]
            mean, std, _ = seed_statistics(finals)
            color = VARIANT_STYLE[variant]["color"]
            ax.plot(np.full(len(finals), i) + 0.12, finals, "o", ms=3, color=color, alpha=0.6)
            ax.errorbar(i - 0.12, mean, yerr=std, fmt="s", color=color, capsize=3)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"δ = {delta:g}", fontsize=9)
    axes[0, 0].set_ylabel("final held-out loss (nats/char)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("final loss at equal samples seen: seeds (dots), mean ± std (squares)", fontsize=10)
    fig.tight_layout()
    return fig


@experiment(
    "scaling-rule-lm",
    "batch-size scaling rules for AdamW on a tiny character-level GPT trained on the stdlib's source",
    defaults={
        "deltas": [2.0, 4.0],
        "seeds": 3,
        "layers": 4,
        "width": 128,
        "heads": 4,
        "context": 128,
        "batch": 32,
        "steps": 3000,
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "train_chars": 8_000_000,
        "eval_chars": 500_000,
        "eval_windows": 1024,
        "eval_points": 20,
    },
    quick={
        "seeds": 3,
        "layers": 2,
        "width": 32,
        "heads": 2,
        "context": 32,
        "batch": 4,
        "steps": 480,
        "lr": 3e-3,
        "train_chars": 300_000,
        "eval_chars": 40_000,
        "eval_windows": 256,
        "eval_points": 8,
    },
)
def run(ctx: Context) -> None:
    p = ctx.params
    if p["seeds"] < 1 or p["steps"] < 1 or p["eval_points"] < 1:
        raise ExperimentError("seeds, steps and eval_points must be positive integers")
    spec = get_optimizer("adamw")
    hp = Hyperparameters(
        lr=p["lr"], beta1=p["beta1"], beta2=p["beta2"], eps=p["eps"], weight_decay=p["weight_decay"]
    )
    deltas = list(p["deltas"])
    configs: list[tuple[str, float]] = [(BASE, 1.0)]
    for delta in deltas:
        to_batch = p["batch"] * delta
        if delta <= 0 or abs(to_batch - round(to_batch)) > 1e-9 or p["steps"] / delta < 1:
            raise ExperimentError(f"deltas: δ = {delta:g} must make δ·batch a whole number and steps/δ ≥ 1")
        configs += [(variant, delta) for variant in SCALING_VARIANTS]
    scaled = {
        key: hp
        if key[0] == BASE
        else variant_hyperparameters(spec, hp, p["batch"], round(p["batch"] * key[1]), key[0])
        for key in configs
    }
    device = ctx.device
    corpus = stdlib_corpus(p["train_chars"], p["eval_chars"])
    corpus = replace(corpus, train=corpus.train.to(device), eval=corpus.eval.to(device))
    shape = ModelShape(p["context"], p["width"], p["layers"], p["heads"])
    eval_windows = evenly_spaced_windows(corpus.eval, p["eval_windows"], shape.context)
    parameters = sum(q.numel() for q in shape.build(0, torch.device("cpu")).parameters())

    groups: dict[tuple[str, float], list[TrainingRun]] = {key: [] for key in configs}
    total_runs = p["seeds"] * len(configs)
    bar = progress(total_runs, "LM training runs", enabled=ctx.progress)
    try:
        for seed in range(p["seeds"]):
            train_seed(ctx, seed, configs, groups, scaled, shape, corpus, eval_windows, bar)
    finally:
        bar.close()
    report(ctx, groups, deltas, corpus, parameters)


def train_seed(
    ctx: Context,
    seed: int,
    configs: Sequence[tuple[str, float]],
    groups: dict[tuple[str, float], list[TrainingRun]],
    scaled: dict[tuple[str, float], Hyperparameters],
    shape: ModelShape,
    corpus: Corpus,
    eval_windows: torch.Tensor,
    bar: Progress,
) -> None:
    """Every configuration from seed ``seed``'s initial weights; appends to ``groups``."""
    p = ctx.params
    init_seed = zlib.crc32(f"{ctx.seed}/lm-init/{seed}".encode())
    for variant, delta in configs:
        batch = round(p["batch"] * delta)
        total = round(p["steps"] / delta)
        run_ = TrainingRun(variant, delta, seed, batch, scaled[(variant, delta)])
        train(
            shape.build(init_seed, ctx.device),
            corpus,
            eval_windows,
            run_,
            total,
            evaluation_steps(total, p["eval_points"]),
            ctx.generator("lm-data", variant, f"{delta:g}", seed),
        )
        groups[(variant, delta)].append(run_)
        bar.update(1)


def report(
    ctx: Context,
    groups: dict[tuple[str, float], list[TrainingRun]],
    deltas: Sequence[float],
    corpus: Corpus,
    parameters: int,
) -> None:
    """Series, figures, summary and the report's words."""
    p, result = ctx.params, ctx.result
    bases = groups[(BASE, 1.0)]
    for (variant, delta), runs in groups.items():
        ok = [r for r in runs if r.diverged_at is None]
        if not ok:
            continue
        values = np.asarray([r.eval_loss for r in ok])
        se = values.std(axis=0, ddof=1) / math.sqrt(len(ok)) if len(ok) > 1 else np.zeros(values.shape[1])
        for unit, x in (("samples", ok[0].samples), ("steps", np.asarray(ok[0].steps))):
            result.add_series(
                f"{variant}/delta={delta:g}/{unit}", "adamw", x, "eval_loss", values.mean(0), se
            )
    result.figures["lm-loss"] = loss_figure(groups, deltas)
    result.figures["lm-final"] = final_figure(groups, deltas)

    tokens = p["steps"] * p["batch"] * p["context"]
    result.say(
        f"A {p['layers']}-layer character-level GPT (width {p['width']}, {p['heads']} heads, context "
        f"{p['context']}, {parameters:,} parameters, float32) trained with torch.optim.AdamW on the "
        f"Python standard library's source ({corpus.train.numel():,} training characters from "
        f"{len(corpus.train_files)} files; held-out loss on {p['eval_windows']} fixed windows of "
        f"{len(corpus.eval_files)} other files). Base: batch {p['batch']}, {p['steps']} steps "
        f"(≈{tokens:,} characters), η = {p['lr']:g}, β = ({p['beta1']:g}, {p['beta2']:g}), "
        f"ε = {p['eps']:g}, θ = {p['weight_decay']:g}, constant learning rate. A run at δB takes "
        f"steps/δ steps: every run sees the same number of samples. {p['seeds']} seeds; a seed fixes the "
        "initial weights, shared by all variants, so differences from the base are paired by seed."
    )
    result.say("")
    base_mean, base_std, base_n = seed_statistics([r.final for r in bases])
    result.say(f"Base final held-out loss: {base_mean:.4f} ± {base_std:.4f} (mean ± std, n = {base_n}).")
    result.say(
        "Paired differences are per seed, mean ± SE over seeds; *indistinguishable* / *higher* / *lower*: "
        "whether the 95% Student-t interval over the seeds contains 0. The gap averages the held-out "
        "loss difference over all evaluation points at equal samples seen."
    )
    result.say("")
    result.say(
        "| δ | variant | η, β₁, β₂, θ, ε | final loss (mean ± std, n) | final − base (paired, ± SE) "
        "| loss-vs-samples gap to base (± SE) |"
    )
    result.say("|---|---|---|---|---|---|")

    summary: dict[str, Any] = {"base": {"final_mean": base_mean, "final_std": base_std, "n": base_n}}
    for delta in deltas:
        for variant in SCALING_VARIANTS:
            runs = groups[(variant, delta)]
            hp = runs[0].hp
            mean, std, n = seed_statistics([r.final for r in runs])
            diff = paired_difference(runs, bases)
            gap = curve_gap(runs, bases)
            diverged = [r.seed for r in runs if r.diverged_at is not None]
            result.say(
                f"| {delta:g} | {variant} | {hp.lr:.3g}, {hp.beta1:.4g}, {hp.beta2:.4g}, "
                f"{hp.weight_decay:.3g}, {hp.eps:.3g} | {mean:.4f} ± {std:.4f} (n = {n}) "
                f"| {describe_difference(*diff)} | {describe_difference(*gap)} |"
            )
            summary[f"{variant}/delta={delta:g}"] = {
                "hyperparameters": vars(hp),
                "batch": runs[0].batch,
                "final_mean": mean,
                "final_std": std,
                "n": n,
                "final_minus_base": diff[0],
                "final_minus_base_se": diff[1],
                "final_minus_base_n": diff[2],
                "curve_gap": gap[0],
                "curve_gap_se": gap[1],
                "curve_gap_n": gap[2],
                "finals": [r.final for r in runs],
                "diverged_seeds": diverged,
            }
    result.say("")
    result.say("What each rule preserved (final loss at equal samples, and the loss-vs-samples curve):")
    for variant in SCALING_VARIANTS:
        parts = []
        for delta in deltas:
            entry = summary[f"{variant}/delta={delta:g}"]
            final = describe_difference(
                entry["final_minus_base"], entry["final_minus_base_se"], entry["final_minus_base_n"]
            )
            curve = describe_difference(entry["curve_gap"], entry["curve_gap_se"], entry["curve_gap_n"])
            parts.append(f"δ = {delta:g}: final {final}, curve {curve}")
        result.say(f"- **{VARIANT_STYLE[variant]['label']}**: " + "; ".join(parts) + ".")
    diverged_any = [k for k, v in summary.items() if k != "base" and v["diverged_seeds"]]
    if diverged_any:
        result.say(f"- Diverged (non-finite loss): {', '.join(diverged_any)}.")
    result.summary.update({"corpus": corpus.describe(), "parameters": parameters, "variants": summary})
