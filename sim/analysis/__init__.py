"""Analysis: from the records of replications to numbers with confidence intervals.

KPIs and costs of one replication, statistics across replications, warm-up,
paired comparisons, sensitivity indices and calibration checks.  Pure
functions of tables; no simulation and no files are written here.
"""
