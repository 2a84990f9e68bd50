"""Experiments: many replications of one or more scenarios.

Replications (serial or on worker processes), runs and comparisons with common
random numbers and sequential stopping rules, and parameter sweeps (local or on
Dask, resumable from their checkpoints).  Results are returned in memory; the
outputs layer writes run folders, figures and reports from them.
"""
