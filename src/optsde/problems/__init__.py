"""Problems: analytic landscapes with synthetic noise, and networks with minibatch noise."""

from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, ProblemError, Quadratic, UserFunction
from optsde.problems.base import GradientOracle
from optsde.problems.network import NetworkProblem, network_problem

__all__ = [
    "EmbeddedSaddle",
    "GradientOracle",
    "NetworkProblem",
    "NoisyProblem",
    "ProblemError",
    "Quadratic",
    "UserFunction",
    "network_problem",
]
