"""Problems: analytic landscapes with synthetic noise, and networks with minibatch noise."""

from optsde.problems.analytic import EmbeddedSaddle, NoisyProblem, ProblemError, Quadratic, UserFunction
from optsde.problems.base import GradientOracle

__all__ = ["EmbeddedSaddle", "GradientOracle", "NoisyProblem", "ProblemError", "Quadratic", "UserFunction"]
