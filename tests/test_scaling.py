"""Batch-size scaling rules (docs/theory.md §6, issue 4): the algebra, the config tool and `optsde scale`,
the quadratic experiment's acceptance claims, and the tiny language model.

Expected values of the rules are computed here from docs/theory.md §6's table, not from the code under
test; statistical claims use Monte Carlo standard errors from the data (``Z_TOL`` SE, conftest).
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from conftest import Z_TOL
from optsde.analysis import Estimate, ratio
from optsde.cli import main
from optsde.cli.scale import register
from optsde.errors import OptsdeError
from optsde.experiments.base import Context, get_experiment
from optsde.experiments.scaling_quadratic import QuadraticSetup, run_group
from optsde.optimizers import Hyperparameters, get_optimizer
from optsde.problems.charlm import (
    CharLMOracle,
    SelectiveDecay,
    TinyGPT,
    evenly_spaced_windows,
    next_character_loss,
    stdlib_corpus,
)
from optsde.scaling import (
    load_config,
    rescale,
    rescale_config,
    save_config,
    scaling_table,
    variant_hyperparameters,
)
from optsde.sde import DiscreteRunner, loss_observable, simulate
from optsde.theory.adaptive import adamw_stationary_second_moment_discrete, stationary_loss

HP = Hyperparameters(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
BATCH_PAIRS = [(64, 256), (64, 128), (64, 32), (64, 16)]  # δ = 4, 2, 1/2, 1/4


def spec_table(optimizer: str, rule: str, hp: Hyperparameters, delta: float) -> dict[str, float]:
    """docs/theory.md §6, typed in from the table: the fields each rule changes, everything else as it was."""
    root = math.sqrt(delta)
    expected = {
        "lr": hp.lr,
        "beta1": hp.beta1,
        "beta2": hp.beta2,
        "eps": hp.eps,
        "weight_decay": hp.weight_decay,
    }
    adam = optimizer in ("adam", "adamw")
    if rule == "paper":
        expected["lr"] = root * hp.lr
        expected["beta2"] = 1 - root * (1 - hp.beta2)
        if adam:
            expected["beta1"] = 1 - root * (1 - hp.beta1)
        if optimizer.endswith("w"):
            expected["weight_decay"] = root * hp.weight_decay
    elif rule == "malladi":
        expected["lr"] = root * hp.lr
        expected["beta2"] = 1 - delta * (1 - hp.beta2)
        if adam:
            expected["beta1"] = 1 - delta * (1 - hp.beta1)
        expected["eps"] = hp.eps / root
        if optimizer.endswith("w"):
            # SPEC's table has no θ for Malladi et al. (their optimizers had no decoupled decay);
            # the project scales it like the paper's rule so that the two rules differ in β and ε only.
            expected["weight_decay"] = root * hp.weight_decay
    elif rule == "linear":
        expected["lr"] = delta * hp.lr
    elif rule == "square-root":
        expected["lr"] = root * hp.lr
    return expected


CASES = [
    ("adamw", "paper"),
    ("adamw", "malladi"),
    ("adam", "paper"),
    ("adam", "malladi"),
    ("rmspropw", "paper"),
    ("rmspropw", "malladi"),
    ("rmsprop", "paper"),
    ("rmsprop", "malladi"),
    ("sgd", "linear"),
    ("signsgd", "square-root"),
]


def base_hp(optimizer: str) -> Hyperparameters:
    return HP if optimizer.endswith("w") else HP.with_(weight_decay=0.0)


@pytest.mark.parametrize(("optimizer", "rule"), CASES)
@pytest.mark.parametrize(("b", "b2"), BATCH_PAIRS)
def test_rule_follows_spec_table(optimizer: str, rule: str, b: int, b2: int) -> None:
    hp = base_hp(optimizer)
    new = rescale(optimizer, hp, b, b2, rule)
    for name, value in spec_table(optimizer, rule, hp, b2 / b).items():
        assert getattr(new, name) == pytest.approx(value, rel=1e-12, abs=1e-15), name


@pytest.mark.parametrize(("optimizer", "rule"), CASES)
@pytest.mark.parametrize(("b", "b2"), BATCH_PAIRS)
def test_delta_then_inverse_is_identity(optimizer: str, rule: str, b: int, b2: int) -> None:
    hp = base_hp(optimizer)
    back = rescale(optimizer, rescale(optimizer, hp, b, b2, rule), b2, b, rule)
    for name in ("lr", "beta1", "beta2", "eps", "weight_decay"):
        assert getattr(back, name) == pytest.approx(getattr(hp, name), rel=1e-12, abs=1e-15), name


def test_default_rule_is_the_papers_and_variants_differ_where_they_should() -> None:
    assert rescale("adamw", HP, 64, 256) == rescale("adamw", HP, 64, 256, "paper")
    assert rescale("sgd", HP.with_(weight_decay=0.0), 8, 16).lr == pytest.approx(2 * HP.lr)
    fixed = variant_hyperparameters("adamw", HP, 64, 256, "paper-fixed-theta")
    assert fixed == rescale("adamw", HP, 64, 256, "paper").with_(weight_decay=HP.weight_decay)
    assert variant_hyperparameters("adamw", HP, 64, 256, "none") == HP


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rescale("adamw", HP, 64, 1024, "malladi"), "outside [0, 1)"),  # β₁ = 1 − 16·0.1 < 0
        (lambda: rescale("adamw", HP.with_(beta1=0.5), 64, 1024, "paper"), "outside [0, 1)"),
        (lambda: rescale("adamw", HP, 0, 64), "positive integer"),
        (lambda: rescale("adamw", HP, 64, -2), "positive integer"),
        (lambda: rescale("adamw", HP, 64, 2.5), "positive integer"),
        (lambda: rescale("adamw", HP, 64, 128, "linear"), "no scaling rule"),
        (lambda: rescale("adam", HP, 64, 128), "weight decay"),
        (lambda: rescale("lion", HP, 64, 128), "unknown optimizer"),
        (lambda: variant_hyperparameters("adamw", HP, 64, 128, "double"), "unknown scaling variant"),
        (lambda: get_optimizer("adamw").rescale(HP, 0.0, "paper"), "must be positive"),
    ],
)
def test_impossible_rescalings_are_user_errors(call, message: str) -> None:
    with pytest.raises(
        OptsdeError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        call()


def test_table_lists_used_fields_for_every_rule() -> None:
    table = scaling_table("rmsprop", HP.with_(weight_decay=0.0), 32, 128)
    assert list(table["rules"]) == ["paper", "malladi"]
    assert list(table["original"]) == ["lr", "beta2", "eps"]
    assert table["delta"] == 4.0
    assert table["rules"]["malladi"]["beta2"] == pytest.approx(1 - 4 * (1 - HP.beta2))


# --- configs and the command line ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_round_trip_keeps_unknown_keys(tmp_path, suffix: str) -> None:
    config = {
        "optimizer": "adamw",
        "lr": 6e-4,
        "betas": [0.9, 0.95],
        "eps": 1e-8,
        "weight_decay": 0.1,
        "batch_size": 512,
        "amsgrad": False,
    }
    path = save_config(config, tmp_path / f"c{suffix}")
    up = rescale_config(load_config(path), 2048)
    assert up["batch_size"] == 2048 and up["amsgrad"] is False
    assert up["lr"] == pytest.approx(1.2e-3)
    assert up["betas"] == pytest.approx([0.8, 0.9])
    assert up["weight_decay"] == pytest.approx(0.2)
    back = rescale_config(load_config(save_config(up, tmp_path / f"up{suffix}")), 512)
    assert back.keys() == config.keys()
    for key in ("lr", "eps", "weight_decay", "batch_size"):
        assert back[key] == pytest.approx(config[key])
    assert back["betas"] == pytest.approx(config["betas"])


def test_config_uses_torch_names_and_defaults() -> None:
    # RMSprop's β is torch's ``alpha``; AdamW's missing weight_decay is torch's default 0.01.
    rms = rescale_config({"optimizer": "rmsprop", "lr": 0.01, "alpha": 0.99, "batch_size": 8}, 32, "malladi")
    assert rms["alpha"] == pytest.approx(1 - 4 * 0.01) and "betas" not in rms
    assert rms["eps"] == pytest.approx(1e-8 / 2)
    adamw = rescale_config({"optimizer": "adamw", "lr": 1e-3, "batch_size": 8}, 32)
    assert adamw["weight_decay"] == pytest.approx(0.02)
    sgd = rescale_config({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 8}, 16)
    assert sgd == {"optimizer": "sgd", "lr": pytest.approx(0.2), "momentum": 0.9, "batch_size": 16}
    with pytest.raises(OptsdeError, match="alpha"):
        rescale_config({"optimizer": "rmsprop", "lr": 0.01, "betas": [0.9, 0.99], "batch_size": 8}, 32)
    with pytest.raises(OptsdeError, match="batch_size"):
        rescale_config({"optimizer": "adamw", "lr": 0.01}, 32)


def run_scale(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["scale", *argv])
    return args.handler(args)


def test_scale_command_json_and_write(tmp_path, capsys) -> None:
    assert run_scale(["--optimizer", "adamw", "--from-batch", "256", "--to-batch", "1024", "--lr", "1e-3",
                      "--weight-decay", "0.1", "--json"]) == 0  # fmt: skip
    table = json.loads(capsys.readouterr().out)
    assert table["rules"]["paper"] == pytest.approx(
        {"lr": 2e-3, "beta1": 0.8, "beta2": 0.998, "eps": 1e-8, "weight_decay": 0.2}
    )
    assert table["rules"]["malladi"]["beta1"] == pytest.approx(0.6)

    source = save_config({"optimizer": "adamw", "lr": 1e-3, "batch_size": 64}, tmp_path / "in.yaml")
    out = tmp_path / "out.json"
    assert (
        run_scale(["--config", str(source), "--to-batch", "16", "--rule", "malladi", "--write", str(out)])
        == 0
    )
    written = json.loads(out.read_text())
    assert written["batch_size"] == 16 and written["betas"] == pytest.approx(
        [1 - 0.25 * 0.1, 1 - 0.25 * 0.001]
    )
    assert "malladi (B = 16)" in capsys.readouterr().out


ADAMW_64 = ["--optimizer", "adamw", "--from-batch", "64", "--lr", "1e-3"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*ADAMW_64, "--to-batch", "1024"], "outside [0, 1)"),
        ([*ADAMW_64, "--to-batch", "128", "--rule", "linear"], "rules paper, malladi"),
        ([*ADAMW_64, "--to-batch", "128", "--beta1", "1.2"], "beta1 must lie in [0, 1)"),
        (["--optimizer", "sgd", "--from-batch", "64", "--to-batch", "128", "--lr", "0.1", "--beta1", "0.9"],
         "sgd has no beta1"),
        (["--optimizer", "adamw", "--from-batch", "0", "--to-batch", "128"], "positive integer"),
        (["--optimizer", "adamw", "--to-batch", "128", "--lr", "0.1"], "--from-batch"),
        (["--config", "/nonexistent/c.json", "--to-batch", "128"], "cannot read config"),
    ],
)  # fmt: skip
def test_scale_command_errors_are_one_line_exit_2(argv: list[str], message: str, capsys) -> None:
    assert main(["scale", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# --- the quadratic experiment's acceptance claims (issue 4, paper Fig. 5) ---------------------------

SETUP = QuadraticSetup(hessian=(1.0, 2.0), sigma=2.0, batch=4, x0=0.2, steps=3000, paths=1000, burn_in=0.4)


def ratio_change(run: tuple[float, float], base: tuple[float, float]) -> tuple[float, float]:
    """``run/base − 1`` and its SE for two independent (mean, SE) levels."""
    change = ratio(Estimate(*run), Estimate(*base)) - 1.0
    return change.value, change.se


def context(name: str, **params) -> Context:
    return Context(experiment=name, params=params, seed=0)


def optimizer_ratios(beta1: float, deltas, variants):
    spec = get_optimizer("adamw")
    hp = Hyperparameters(lr=0.0025, beta1=beta1, beta2=0.999, eps=1e-8, weight_decay=1.0)
    runs = run_group(context("test"), spec, SETUP, hp, deltas, variants, models=(), label=f"b{beta1}")
    base = runs[("base", 1.0)].stationary["optimizer"]
    ratios = {key: ratio_change(run.stationary["optimizer"], base) for key, run in runs.items()}
    return runs, ratios


def closed_form_ratio(runs, key) -> float:
    """The linearised discrete AdamW's asymptotic loss ratio (docs/theory.md §5), independent of the
    simulation."""

    def loss(run) -> float:
        s = [SETUP.sigma / math.sqrt(run.batch)] * len(SETUP.hessian)
        return stationary_loss(
            SETUP.hessian, adamw_stationary_second_moment_discrete(SETUP.hessian, s, run.hp)
        )

    return loss(runs[key]) / loss(runs[("base", 1.0)]) - 1.0


def test_beta1_09_paper_rule_keeps_asymptotic_loss_and_fixed_theta_does_not() -> None:
    runs, ratios = optimizer_ratios(0.9, [2.0, 4.0], ["paper", "paper-fixed-theta"])
    for delta in (2.0, 4.0):
        paper, paper_se = ratios[("paper", delta)]
        assert paper_se < 0.015, "too few paths to test a 5% claim"
        assert abs(paper) - Z_TOL * paper_se <= 0.05, f"δ={delta}: paper's rule moved the loss {paper:+.1%}"
        fixed, fixed_se = ratios[("paper-fixed-theta", delta)]
        assert fixed > Z_TOL * fixed_se, f"δ={delta}: θ not rescaled, {fixed:+.1%} ± {fixed_se:.1%}"
        # docs/theory.md §5: the discrete Lyapunov form is within ≈2% of the optimizer at κ ≲ 0.1.
        assert abs(fixed - closed_form_ratio(runs, ("paper-fixed-theta", delta))) <= Z_TOL * fixed_se + 0.02


def test_beta1_099_report_says_which_beta_rule_keeps_the_loss() -> None:
    exp = get_experiment("scaling-rule-quadratic")
    params = exp.resolve(quick=False, settings={}, paths=None)
    params.update(optimizers=["adamw"], beta1=[0.99], deltas=[4.0], sde=[])
    ctx = context("scaling-rule-quadratic", **params)
    exp.run(ctx)
    ratios = ctx.result.summary["groups"]["adamw-beta1=0.99"]["ratios"]
    malladi, paper = ratios["malladi/delta=4"], ratios["paper/delta=4"]
    assert malladi["optimizer ratio-1 se"] < 0.015 and paper["optimizer ratio-1 se"] < 0.015
    assert abs(malladi["optimizer ratio-1"]) - Z_TOL * malladi["optimizer ratio-1 se"] <= 0.05
    assert abs(paper["optimizer ratio-1"]) - Z_TOL * paper["optimizer ratio-1 se"] > 0.05
    text = "\n".join(ctx.result.report)
    assert "adamw-beta1=0.99, Malladi et al.'s β rule: kept at δ = 4 (" in text
    assert "adamw-beta1=0.99, paper's rule: changed at δ = 4 (" in text
    assert set(ctx.result.figures) == {"adamw-beta1=0.99-loss", "adamw-beta1=0.99-ratios"}


def test_refined_sde_predicts_the_optimizers_ratio_for_every_variant() -> None:
    spec = get_optimizer("adamw")
    hp = Hyperparameters(lr=0.0025, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1.0)
    variants = ["paper", "malladi", "paper-fixed-theta", "none"]
    runs = run_group(context("test"), spec, SETUP, hp, [2.0], variants, models=("refined",), label="sde")
    base = runs[("base", 1.0)].stationary
    for variant in variants:
        run = runs[(variant, 2.0)].stationary
        opt = ratio_change(run["optimizer"], base["optimizer"])
        sde = ratio_change(run["sde-refined"], base["sde-refined"])
        # docs/theory.md §3: the refined SDE is within 1–2% of the optimizer; each level carries that error.
        assert abs(opt[0] - sde[0]) <= Z_TOL * math.hypot(opt[1], sde[1]) + 0.04, variant


# --- the tiny language model ------------------------------------------------------------------------


def test_stdlib_corpus_is_deterministic_and_held_out() -> None:
    a, b = stdlib_corpus(20_000, 5_000), stdlib_corpus(20_000, 5_000)
    assert torch.equal(a.train, b.train) and torch.equal(a.eval, b.eval)
    assert a.train.numel() == 20_000 and a.eval.numel() == 5_000
    assert not set(a.train_files) & set(a.eval_files)
    assert int(a.train.max()) < 128


def tiny_lm(dtype: torch.dtype = torch.float32) -> tuple[CharLMOracle, DiscreteRunner, torch.Tensor]:
    corpus = stdlib_corpus(20_000, 4_000)
    torch.manual_seed(0)
    model = TinyGPT(context=16, width=16, layers=1, heads=2).to(dtype)
    oracle = CharLMOracle(model, corpus.train, evenly_spaced_windows(corpus.eval, 64, 16), batch=8)
    runner = DiscreteRunner(SelectiveDecay(get_optimizer("adamw").discrete, oracle.decay_mask()))
    return oracle, runner, oracle.flatten(model)


def test_lm_training_through_simulate_is_torch_adamw_with_decay_on_matrices() -> None:
    """Ground truth: torch.optim.AdamW with GPT-2's parameter groups (decay on matrices only), fed
    the windows the oracle draws from the same generator, in float64."""
    oracle, runner, x0 = tiny_lm(torch.float64)
    hp = Hyperparameters(lr=3e-3, beta2=0.95, weight_decay=0.1)
    steps = 5
    observe = {"x": lambda state, _: state.x}
    rec = simulate(runner, oracle, hp, x0, paths=1, steps=steps, record_at=[steps], observables=observe,
                   generator=torch.Generator().manual_seed(7))  # fmt: skip
    model = oracle.model
    with torch.no_grad():
        for name, value in oracle.parameters(x0.clone()).items():
            model.get_parameter(name).copy_(value)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
         {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
        lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
    )  # fmt: skip
    generator, offsets = torch.Generator().manual_seed(7), torch.arange(17)
    for _ in range(steps):
        starts = torch.randint(oracle.train.numel() - 16, (1, 8), generator=generator)
        optimizer.zero_grad()
        next_character_loss(model, oracle.train[starts[0, :, None] + offsets].long()).backward()
        optimizer.step()
    expected = oracle.flatten(model).numpy()
    assert abs(rec.values["x"][-1, 0] - expected).max() < 1e-12
    assert abs(expected - x0.numpy()).max() > 1e-4  # it moved


def test_tiny_lm_loss_is_finite_and_decreases() -> None:
    oracle, runner, x0 = tiny_lm()
    hp = Hyperparameters(lr=3e-3, beta2=0.95, weight_decay=0.1)
    rec = simulate(runner, oracle, hp, x0, paths=2, steps=60, record_at=[0, 30, 60],
                   observables={"eval_loss": loss_observable},
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    losses = rec.mean("eval_loss")
    assert rec.divergence is None and all(math.isfinite(v) for v in losses)
    # At initialisation the prediction is near uniform over 128 characters: ln 128 ≈ 4.85 nats.
    assert losses[0] == pytest.approx(math.log(128), abs=0.1)
    assert losses[0] > losses[1] > losses[2]
    assert losses[2] < losses[0] - 1.0


def test_lm_experiment_reports_every_variant_with_spread() -> None:
    exp = get_experiment("scaling-rule-lm")
    params = exp.resolve(quick=True, settings={}, paths=None)
    params.update(seeds=2, layers=1, width=8, heads=2, context=8, batch=2, steps=8, eval_points=2,
                  train_chars=5_000, eval_chars=2_000, eval_windows=16)  # fmt: skip
    ctx = context("scaling-rule-lm", **params)
    exp.run(ctx)
    variants = ctx.result.summary["variants"]
    for delta in ("2", "4"):
        for variant in ("paper", "malladi", "paper-fixed-theta", "none"):
            entry = variants[f"{variant}/delta={delta}"]
            assert (
                entry["n"] == 2 and math.isfinite(entry["final_mean"]) and math.isfinite(entry["final_std"])
            )
    text = "\n".join(ctx.result.report)
    assert "(n = 2)" in text and "What each rule preserved" in text
    assert set(ctx.result.figures) == {"lm-loss", "lm-final"}
    # B_simple beside the results (tested against brute force in test_noise_scale.py).
    noise = ctx.result.summary["noise_scale"]
    assert noise["b_simple"] > 0 and noise["batches"] == [2, 4, 8] and noise["examples"] == 512
    assert "B_simple = tr C/|∇f|²" in text
