"""Experiments: one module each; each registers itself with :func:`base.experiment`."""
