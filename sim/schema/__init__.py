"""The scenario schema: what a scenario file may say, validated and immutable.

Distributions live here too: in a scenario they are data (``{dist, params}``)
that know their analytic mean; the engine only asks them for quantiles.
"""
