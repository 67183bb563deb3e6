"""Experiment ``scaling-rule-lm``: batch-size scaling rules for AdamW on a small character-level GPT
(docs/theory.md §6, §7 "beyond the figures": the poster's Pythia validation at a scale we can run).

A :class:`~optsde.problems.charlm.TinyGPT` trains with AdamW on the Python standard library's
source (read offline, :func:`~optsde.problems.charlm.stdlib_corpus`) at batch ``B`` and at ``δB``
under the four :data:`optsde.scaling.SCALING_VARIANTS`.  Training is :func:`optsde.sde.simulate`
of the discrete AdamW (decay on matrices only, :class:`~optsde.problems.charlm.SelectiveDecay`)
over the char-LM oracle, one path per seed, the held-out loss recorded as an observable.  Every
run sees the same number of samples (``steps`` at ``B``, ``steps/δ`` at ``δB``), so the loss
against samples seen shows what a larger batch costs or saves per example.  Each seed fixes the
initial weights, shared by every variant, so differences from the base run are paired.  Losses
are in nats per character on held-out files.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optsde.analysis import Check, Estimate, Matches, sample_mean
from optsde.experiments.base import Context, ExperimentError, experiment
from optsde.figures import BASE_VARIANT, SCALING_VARIANT_STYLE
from optsde.figures.scaling_lm import Config, final_figure, finals, loss_figure
from optsde.noise_scale import NoiseScale, gradient_noise_scale, regime_warning
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.charlm import CharLMOracle, SelectiveDecay, TinyGPT, evenly_spaced_windows, stdlib_corpus
from optsde.scaling import SCALING_VARIANTS, variant_hyperparameters
from optsde.sde import DiscreteRunner, Recording, loss_observable, simulate


def evaluation_steps(total_steps: int, points: int) -> list[int]:
    """``points`` evenly spaced steps plus 0: the same sample counts for every batch size (a
    regular grid on purpose: runs at different δ are compared at equal samples seen)."""
    return sorted({round(k * total_steps / points) for k in range(points + 1)})


def spread(values: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation (ddof 1) and count of the finite values (nan where too few)."""
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else math.nan
    return {
        "final_mean": mean,
        "final_std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        "n": finite.size,
    }


def paired(rec: Recording, base: Recording, whole_curve: bool) -> Estimate | None:
    """Final held-out loss (or its mean over the evaluation points after 0) minus the same seed's
    base run at equal samples seen: mean and SE over seeds (None if a run diverged)."""
    if rec.divergence is not None or base.divergence is not None:
        return None
    a, b = rec.values["eval_loss"], base.values["eval_loss"]
    diff = (a[1:] - b[1:]).mean(axis=0) if whole_curve else a[-1] - b[-1]
    return sample_mean(diff)


def difference_check(name: str, value: Estimate | None) -> Check:
    """Is the difference from the base run zero within the policy's SE (docs/analysis.md)?"""
    return Check(name, value or Estimate(math.inf, 0.0), 0.0, Matches(), "paired difference to the base run")


def describe(check: Check) -> str:
    if not math.isfinite(check.value.value):
        return "diverged"
    if not math.isfinite(check.value.se):
        return f"{check.value.value:+.3f} (one seed, no error bar)"
    word = {"pass": "indistinguishable", "inconclusive": "inconclusive"}.get(
        check.verdict, "higher" if check.value.value > 0 else "lower"
    )
    return f"{check.value.value:+.3f} ± {check.value.se:.3f} ({word})"


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
    spec = get_optimizer("adamw")
    hp = Hyperparameters(
        lr=p["lr"], beta1=p["beta1"], beta2=p["beta2"], eps=p["eps"], weight_decay=p["weight_decay"]
    )
    deltas = list(p["deltas"])
    configs: list[Config] = [(BASE_VARIANT, 1.0)]
    for delta in deltas:
        if delta <= 0 or abs(p["batch"] * delta - round(p["batch"] * delta)) > 1e-9 or p["steps"] / delta < 1:
            raise ExperimentError(f"deltas: δ = {delta:g} must make δ·batch a whole number and steps/δ ≥ 1")
        configs += [(variant, delta) for variant in SCALING_VARIANTS]
    corpus = stdlib_corpus(p["train_chars"], p["eval_chars"])
    corpus = replace(corpus, train=corpus.train.to(ctx.device), eval=corpus.eval.to(ctx.device))
    template = TinyGPT(p["context"], p["width"], p["layers"], p["heads"]).to(ctx.device)
    eval_windows = evenly_spaced_windows(corpus.eval, p["eval_windows"], p["context"])
    base_oracle = CharLMOracle(template, corpus.train, eval_windows, p["batch"])
    # Seed s fixes the initial weights, shared by every variant: differences are paired by seed.
    x0 = torch.stack(
        [base_oracle.x0(zlib.crc32(f"{ctx.seed}/lm-init/{s}".encode())) for s in range(p["seeds"])]
    )
    runner = DiscreteRunner(SelectiveDecay(spec.discrete, base_oracle.decay_mask().to(ctx.device)))

    runs: dict[Config, Recording] = {}
    scaled: dict[Config, Hyperparameters] = {}
    for variant, delta in configs:
        batch, total = round(p["batch"] * delta), round(p["steps"] / delta)
        scaled[(variant, delta)] = (
            hp if variant == BASE_VARIANT else variant_hyperparameters(spec, hp, p["batch"], batch, variant)
        )
        runs[(variant, delta)] = simulate(
            runner,
            replace(base_oracle, batch=batch),
            scaled[(variant, delta)],
            x0,
            paths=p["seeds"],
            steps=total,
            record_at=evaluation_steps(total, p["eval_points"]),
            observables={"eval_loss": loss_observable},
            generator=ctx.generator("lm-data", variant, f"{delta:g}"),
            progress=ctx.progress,
            checkpoint=ctx.checkpoint("lm", variant, f"{delta:g}"),
        )
    noise_scale = initial_noise_scale(template, x0[0], corpus.train, p["context"])
    report(ctx, runs, scaled, deltas, corpus.describe(), base_oracle.dim)
    say_noise_scale(ctx, noise_scale, [round(p["batch"] * d) for d in (1.0, *deltas)])


def initial_noise_scale(template: TinyGPT, x0: torch.Tensor, train: torch.Tensor, context: int) -> NoiseScale:
    """``B_simple`` (docs/theory.md §9) at the first seed's initial weights over 512 training windows;
    one example is one window of ``context`` characters, as one minibatch element is."""
    model = copy.deepcopy(template)
    torch.nn.utils.vector_to_parameters(x0.to(next(model.parameters()).dtype), model.parameters())
    windows = evenly_spaced_windows(train, 512, context)

    def window_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(dim=1)

    return gradient_noise_scale(model, window_loss, windows[:, :-1], windows[:, 1:], chunk_size=64)


def say_noise_scale(ctx: Context, scale: NoiseScale, batches: list[int]) -> None:
    """B_simple beside the batch sizes the variants use, with the regime warning where one applies."""
    ctx.result.summary["noise_scale"] = {**scale.as_dict(), "batches": batches}
    ctx.result.say("")
    ctx.result.say(
        f"Gradient noise scale at the initial weights: B_simple = tr C/|∇f|² = {scale.b_simple:.3g} "
        f"windows (over {scale.examples} training windows). The batches here run from {min(batches)} "
        f"to {max(batches)}; the scaling rules were derived for batches well below B_simple."
    )
    for batch in batches:
        warning = regime_warning(batch, scale.b_simple, " at the initial weights")
        if warning:
            ctx.result.say(f"- {warning.removeprefix('warning: ')}")


def report(
    ctx: Context,
    runs: dict[Config, Recording],
    scaled: dict[Config, Hyperparameters],
    deltas: Sequence[float],
    corpus: dict[str, Any],
    parameters: int,
) -> None:
    """Series, figures, checks, summary and the report's words."""
    p, result = ctx.params, ctx.result
    base = runs[(BASE_VARIANT, 1.0)]
    for (variant, delta), rec in runs.items():
        batch = round(p["batch"] * delta)
        for unit, x in (("samples", rec.steps * batch), ("steps", rec.steps)):
            mean, se = rec.mean("eval_loss"), rec.stderr("eval_loss")
            result.add_series(f"{variant}/delta={delta:g}/{unit}", "adamw", x, "eval_loss", mean, se)
    result.figures["lm-loss"] = loss_figure(runs, p["batch"], deltas)
    result.figures["lm-final"] = final_figure(runs, deltas)

    tokens = p["steps"] * p["batch"] * p["context"]
    result.say(
        f"A {p['layers']}-layer character-level GPT (width {p['width']}, {p['heads']} heads, context "
        f"{p['context']}, {parameters:,} parameters) trained with AdamW (optsde's discrete AdamW through "
        f"`simulate`, decay on matrices only) on the Python standard library's source "
        f"({corpus['train_characters']:,} training characters from {corpus['train_files']} files; held-out "
        f"loss on {p['eval_windows']} fixed windows of {corpus['eval_files']} other files). Base: batch "
        f"{p['batch']}, {p['steps']} steps (≈{tokens:,} characters), η = {p['lr']:g}, β = ({p['beta1']:g}, "
        f"{p['beta2']:g}), ε = {p['eps']:g}, θ = {p['weight_decay']:g}, constant learning rate. A run at δB "
        f"takes steps/δ steps: every run sees the same number of samples. {p['seeds']} seeds; a seed fixes "
        "the initial weights, shared by all variants, so differences from the base are paired by seed."
    )
    result.say("")
    base_final = spread(finals(base))
    result.say(f"Base final held-out loss: {base_final['final_mean']:.4f} ± {base_final['final_std']:.4f} "
               f"(mean ± std, n = {base_final['n']}).")  # fmt: skip
    result.say(
        "Paired differences are per seed, mean ± SE over seeds; *indistinguishable* / *higher* / *lower*: "
        "the check of the difference against 0 (docs/analysis.md's policy, 3 SE; with few seeds the SE "
        "itself is uncertain). The gap averages the held-out loss difference over all evaluation points "
        "at equal samples seen."
    )
    result.say("")
    result.say(
        "| δ | variant | η, β₁, β₂, θ, ε | final loss (mean ± std, n) | final − base (paired, ± SE) "
        "| loss-vs-samples gap to base (± SE) |"
    )
    result.say("|---|---|---|---|---|---|")
    summary: dict[str, Any] = {"base": base_final}
    preserved: dict[str, list[str]] = {variant: [] for variant in SCALING_VARIANTS}
    for delta in deltas:
        checks = []
        for variant in SCALING_VARIANTS:
            rec, hp = runs[(variant, delta)], scaled[(variant, delta)]
            values = finals(rec)
            final = difference_check(f"{variant}: final − base", paired(rec, base, whole_curve=False))
            curve = difference_check(f"{variant}: curve gap", paired(rec, base, whole_curve=True))
            checks += [final, curve]
            stats = spread(values)
            result.say(
                f"| {delta:g} | {variant} | {hp.lr:.3g}, {hp.beta1:.4g}, {hp.beta2:.4g}, "
                f"{hp.weight_decay:.3g}, {hp.eps:.3g} | {stats['final_mean']:.4f} ± {stats['final_std']:.4f} "
                f"(n = {stats['n']}) "
                f"| {describe(final)} | {describe(curve)} |"
            )
            preserved[variant].append(f"δ = {delta:g}: final {describe(final)}, curve {describe(curve)}")
            summary[f"{variant}/delta={delta:g}"] = {
                "hyperparameters": vars(hp),
                "batch": round(p["batch"] * delta),
                **stats,
                "final_minus_base": final.value.value,
                "final_minus_base_se": final.value.se,
                "curve_gap": curve.value.value,
                "curve_gap_se": curve.value.se,
                "finals": values.tolist(),
                "diverged_at": rec.divergence.step if rec.divergence else None,
            }
        result.add_checks(f"δ = {delta:g}", checks)
    result.say("")
    result.say("What each rule preserved (final loss at equal samples, and the loss-vs-samples curve):")
    for variant, parts in preserved.items():
        result.say(f"- **{SCALING_VARIANT_STYLE[variant]['label']}**: " + "; ".join(parts) + ".")
    result.summary.update({"corpus": corpus, "parameters": parameters, "variants": summary})
