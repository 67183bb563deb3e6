"""Optimizer families: one module each, holding discrete update, SDE models and scaling rules."""

from optsde.optimizers.adam import ADAM_SPEC, ADAMW_SPEC
from optsde.optimizers.base import (
    Capabilities,
    DiscreteOptimizer,
    HyperparameterError,
    Hyperparameters,
    OptimizerSpec,
    Schedule,
    State,
    constant_schedule,
)
from optsde.optimizers.rmsprop import RMSPROP_SPEC, RMSPROPW_SPEC
from optsde.optimizers.sgd import SGD_SPEC
from optsde.optimizers.signsgd import SIGNSGD_SPEC
from optsde.optimizers.terms import SDE, Term

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec for spec in (SGD_SPEC, SIGNSGD_SPEC, RMSPROP_SPEC, RMSPROPW_SPEC, ADAM_SPEC, ADAMW_SPEC)
}


def get_optimizer(name: str) -> OptimizerSpec:
    """The optimizer called ``name``, or a :class:`HyperparameterError` listing the known ones."""
    try:
        return OPTIMIZERS[name.lower()]
    except KeyError:
        known = ", ".join(OPTIMIZERS)
        raise HyperparameterError(f"unknown optimizer {name!r}; choose one of: {known}") from None


__all__ = [
    "OPTIMIZERS",
    "SDE",
    "Capabilities",
    "DiscreteOptimizer",
    "HyperparameterError",
    "Hyperparameters",
    "OptimizerSpec",
    "Schedule",
    "State",
    "Term",
    "constant_schedule",
    "get_optimizer",
]
