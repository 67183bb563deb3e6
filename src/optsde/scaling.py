"""Batch-size scaling rules as a tool: ``B → δB`` and the hyperparameters that go with it (docs/theory.md §6).

The algebra of each rule lives with its optimizer family
(:meth:`optsde.optimizers.base.OptimizerSpec.rescale`); this module is the user-facing
layer on top of it: batch sizes instead of ``δ``, side-by-side tables of every rule,
torch.optim-style configs read from and written to JSON or YAML, and the four
variants the scaling experiments compare.

| rule | η | β_i | θ | ε |
|---|---|---|---|---|
| ``paper`` (AdamW/RMSpropW, and Adam/RMSprop) | √δ η | 1 − √δ(1 − β_i) | √δ θ | — |
| ``malladi`` (Malladi et al. 2022) | √δ η | 1 − δ(1 − β_i) | √δ θ | ε/√δ |
| ``linear`` (SGD) | δ η | — | — | — |
| ``square-root`` (SignSGD) | √δ η | — | — | — |

Example::

    >>> from optsde.optimizers import Hyperparameters
    >>> from optsde.scaling import rescale
    >>> hp = Hyperparameters(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    >>> new = rescale("adamw", hp, from_batch=256, to_batch=1024)   # the paper's rule
    >>> round(new.lr, 6), round(new.beta1, 6), round(new.weight_decay, 6)
    (0.002, 0.8, 0.2)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optsde.errors import OptsdeError
from optsde.optimizers import Hyperparameters, OptimizerSpec, get_optimizer

FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay")
"""Hyperparameter fields in display order (the optimizer's ``uses`` picks which apply)."""

SCALING_VARIANTS: dict[str, str] = {
    "paper": "the paper's rule: η → √δη, β → 1 − √δ(1 − β), θ → √δθ",
    "malladi": "Malladi et al.'s β rule: η → √δη, β → 1 − δ(1 − β), ε → ε/√δ, θ → √δθ",
    "paper-fixed-theta": "the paper's rule without rescaling θ",
    "none": "no rescaling: the batch changes, the hyperparameters do not",
}
"""The four variants the scaling experiments compare, name → what it does."""


class ScalingError(OptsdeError):
    """A batch-size change that cannot be made; the message says how to fix it."""


def _tidy(value: float) -> float:
    """``value`` to 15 significant digits: ``1 − 4·0.1`` prints as 0.6, not 0.6000000000000001."""
    return float(f"{value:.15g}")


def _optimizer(optimizer: str | OptimizerSpec) -> OptimizerSpec:
    return optimizer if isinstance(optimizer, OptimizerSpec) else get_optimizer(optimizer)


def _batch(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScalingError(f"{name} must be a positive integer batch size, got {value!r}")
    return value


def batch_ratio(from_batch: int, to_batch: int) -> float:
    """``δ = B'/B`` for two positive integer batch sizes."""
    return _batch(to_batch, "to_batch") / _batch(from_batch, "from_batch")


def rules(optimizer: str | OptimizerSpec) -> tuple[str, ...]:
    """The scaling rules ``optimizer`` has, its default (the paper's where it exists) first."""
    return tuple(_optimizer(optimizer).scaling_rules)


def rescale(
    optimizer: str | OptimizerSpec,
    hp: Hyperparameters,
    from_batch: int,
    to_batch: int,
    rule: str | None = None,
) -> Hyperparameters:
    """Hyperparameters for batch size ``to_batch`` given ``hp`` tuned at ``from_batch`` (docs/theory.md §6).

    ``rule`` defaults to the optimizer's first rule (``paper`` for the adaptive
    families, ``linear`` for SGD, ``square-root`` for SignSGD).  A rescaled β outside
    ``[0, 1)`` or a field the optimizer does not have raises :class:`OptsdeError`.
    """
    spec = _optimizer(optimizer)
    spec.check(hp)
    delta = batch_ratio(from_batch, to_batch)
    return spec.rescale(hp, delta, rule or rules(spec)[0])


def variant_hyperparameters(
    optimizer: str | OptimizerSpec, hp: Hyperparameters, from_batch: int, to_batch: int, variant: str
) -> Hyperparameters:
    """The hyperparameters of one of :data:`SCALING_VARIANTS` at batch ``to_batch``."""
    spec = _optimizer(optimizer)
    if variant == "paper":
        return rescale(spec, hp, from_batch, to_batch, "paper")
    if variant == "malladi":
        return rescale(spec, hp, from_batch, to_batch, "malladi")
    if variant == "paper-fixed-theta":
        return rescale(spec, hp, from_batch, to_batch, "paper").with_(weight_decay=hp.weight_decay)
    if variant == "none":
        batch_ratio(from_batch, to_batch)
        return hp
    raise ScalingError(f"unknown scaling variant {variant!r}; choose one of: {', '.join(SCALING_VARIANTS)}")


def used_fields(optimizer: str | OptimizerSpec) -> tuple[str, ...]:
    """The hyperparameter fields ``optimizer`` reads, in :data:`FIELDS` order."""
    spec = _optimizer(optimizer)
    return tuple(name for name in FIELDS if name in spec.uses)


def scaling_table(
    optimizer: str | OptimizerSpec,
    hp: Hyperparameters,
    from_batch: int,
    to_batch: int,
    rule_names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Every rule's rescaled hyperparameters side by side, as plain data (the ``--json`` output).

    ``{"optimizer", "from_batch", "to_batch", "delta", "original": {field: value},
    "rules": {rule: {field: value}}}``, listing only the fields the optimizer uses.
    Any impossible result raises :class:`OptsdeError` naming the rule.
    """
    spec = _optimizer(optimizer)
    names = rule_names or rules(spec)
    fields = used_fields(spec)

    def pick(values: Hyperparameters) -> dict[str, float]:
        return {name: _tidy(getattr(values, name)) for name in fields}

    return {
        "optimizer": spec.name,
        "from_batch": from_batch,
        "to_batch": to_batch,
        "delta": batch_ratio(from_batch, to_batch),
        "original": pick(hp),
        "rules": {name: pick(rescale(spec, hp, from_batch, to_batch, name)) for name in names},
    }


def format_table(table: Mapping[str, Any]) -> str:
    """A fixed-width text rendering of :func:`scaling_table`."""
    rule_names = list(table["rules"])
    header = ["", f"B = {table['from_batch']}", *(f"{name} (B = {table['to_batch']})" for name in rule_names)]
    rows = [header]
    for name in table["original"]:
        rows.append(
            [name, f"{table['original'][name]:.6g}", *(f"{table['rules'][r][name]:.6g}" for r in rule_names)]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    batches = f"batch {table['from_batch']} → {table['to_batch']} (δ = {table['delta']:g})"
    lines = [f"{table['optimizer']}: {batches}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


# --- torch.optim-style configs ---------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """A JSON (``.json``) or YAML (``.yaml``/``.yml``) mapping of hyperparameters."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScalingError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # a parse error of either format is one line for the user
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScalingError(f"cannot parse config {path}: {first}") from None
    if not isinstance(data, dict):
        raise ScalingError(f'config {path} must be a mapping like {{"lr": 0.001, "batch_size": 64}}')
    return data


def save_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``config`` as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(dict(config), sort_keys=False)
    else:
        text = json.dumps(dict(config), indent=2) + "\n"
    try:
        path.write_text(text)
    except OSError as exc:
        raise ScalingError(f"cannot write {path}: {exc.strerror}") from None
    return path


def _number(config: Mapping[str, Any], key: str) -> float:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScalingError(f"config field {key!r} must be a finite number, got {value!r}")
    return float(value)


def config_hyperparameters(
    config: Mapping[str, Any], optimizer: str | None = None
) -> tuple[OptimizerSpec, Hyperparameters, int]:
    """``(optimizer, hyperparameters, batch_size)`` of a torch.optim-style config.

    Keys as torch.optim names them: ``lr``, ``betas`` ([β₁, β₂], Adam(W)), ``alpha``
    (RMSprop(W)'s β), ``eps``, ``weight_decay``, plus ``batch_size`` and optionally
    ``optimizer``; a missing value takes torch.optim's default.  ``optimizer`` given
    here must agree with the config's.
    """
    named = config.get("optimizer")
    if named is not None and optimizer is not None and str(named).lower() != optimizer.lower():
        raise ScalingError(
            f"the config says optimizer {named!r} but {optimizer!r} was asked for; drop one of them"
        )
    name = optimizer or named
    if name is None:
        raise ScalingError('say which optimizer the config is for: an "optimizer" field or --optimizer')
    spec = get_optimizer(str(name))
    for key in ("lr", "batch_size"):
        if key not in config:
            raise ScalingError(f'the config has no {key!r}; add it (e.g. "lr": 0.001, "batch_size": 64)')
    batch = _batch(config["batch_size"], "batch_size")
    values = dict(spec.torch_defaults)
    values["lr"] = _number(config, "lr")
    beta_key = _beta_key(spec)
    other = {"betas": "alpha", "alpha": "betas"}.get(beta_key or "")
    if other in config:
        raise ScalingError(f"{spec.name} has no {other!r}; torch.optim calls its β {beta_key!r}")
    if beta_key == "betas" and "betas" in config:
        betas = config["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
            raise ScalingError(f"config field 'betas' must be a pair [beta1, beta2], got {betas!r}")
        values["beta1"], values["beta2"] = (_number({"betas": b}, "betas") for b in betas)
    if beta_key == "alpha" and "alpha" in config:
        values["beta2"] = _number(config, "alpha")
    for key in ("eps", "weight_decay"):
        if key in config:
            values[key] = _number(config, key)
    hp = Hyperparameters(**values)
    spec.check(hp)
    return spec, hp, batch


def _beta_key(spec: OptimizerSpec) -> str | None:
    """torch.optim's name for the family's β: ``betas`` (Adam), ``alpha`` (RMSprop), or none."""
    if "beta1" in spec.uses:
        return "betas"
    return "alpha" if "beta2" in spec.uses else None


def hyperparameters_config(optimizer: str | OptimizerSpec, hp: Hyperparameters, batch: int) -> dict[str, Any]:
    """The torch.optim-style config of ``hp`` at ``batch``: every field the optimizer uses."""
    spec = _optimizer(optimizer)
    config: dict[str, Any] = {"optimizer": spec.name, "batch_size": batch, "lr": _tidy(hp.lr)}
    beta_key = _beta_key(spec)
    if beta_key == "betas":
        config["betas"] = [_tidy(hp.beta1), _tidy(hp.beta2)]
    elif beta_key == "alpha":
        config["alpha"] = _tidy(hp.beta2)
    for key in ("eps", "weight_decay"):
        if key in spec.uses:
            config[key] = _tidy(getattr(hp, key))
    return config


def rescale_config(
    config: Mapping[str, Any], to_batch: int, rule: str | None = None, optimizer: str | None = None
) -> dict[str, Any]:
    """A copy of ``config`` rescaled to ``to_batch`` under ``rule`` (docs/theory.md §6).

    Every field the optimizer uses is written out (a default the rule changes, like
    AdamW's ``weight_decay = 0.01``, must be stated at the new batch size); every
    other key is copied unchanged, so the result still feeds ``torch.optim.X(params, **...)``.
    """
    spec, hp, batch = config_hyperparameters(config, optimizer)
    new = rescale(spec, hp, batch, to_batch, rule)
    rescaled = hyperparameters_config(spec, new, to_batch)
    if "optimizer" not in config:
        del rescaled["optimizer"]
    return {**config, **rescaled}
