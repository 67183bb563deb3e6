"""Closed forms of docs/theory.md §5: stationary moments, loss limits and bounds, checked against simulation.

- :mod:`optsde.theory.sgd`: SGD on a diagonal quadratic, its loss bound, the noise-resilience law,
  and the helpers the other modules share (argument checks, the constant-rate relaxation).
- :mod:`optsde.theory.signsgd`: SignSGD's phase-3 moments and stationary law, the per-phase loss
  bounds, the schedule bound, the phase-2 bracket, and phase-occupancy observables.
- :mod:`optsde.theory.adaptive`: RMSprop(W) and Adam(W) near a minimum.
"""
