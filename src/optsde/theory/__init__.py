"""Closed forms of SPEC §5: stationary moments, loss limits and bounds, checked against simulation."""
