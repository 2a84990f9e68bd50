"""Outputs: the run folder, the figures and the HTML report.

Everything here turns experiment results into files for people; the report is
rendered from a finished folder alone, from the template in ``templates/``.
"""
