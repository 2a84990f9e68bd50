"""One replication: the SimPy model of the pathway and everything it runs on.

:mod:`~iopsim.engine.model` wires the pathway; :mod:`~iopsim.engine.stages`
holds patients, waitlists, intake and the generic stage visit;
:mod:`~iopsim.engine.iop` the IOP's groups and session calendar;
:mod:`~iopsim.engine.staff` rosters and bookings; :mod:`~iopsim.engine.streams`
the named random streams; :mod:`~iopsim.engine.records` the tables a
replication returns.  Nothing here computes a statistic or writes a file.
"""
