"""optsde: optimizers through the lens of SDEs (Compagnoni et al., ICLR 2025).

Layers, bottom to top: problems and noise → optimizers and their SDE models →
integrator → experiments → command line and reports.
"""

__version__ = "0.1.0"
