"""Named random streams.

Every random decision in the model draws from its own stream, and every
stream's seed is derived from ``(scenario seed, replication, stream name)`` --
never from the order in which streams are created.  Adding a new random
decision therefore leaves every other decision's draws unchanged, and two
scenarios run with the same seed and replication see the same numbers
wherever they agree: the basis of common random numbers (CRN).

Two kinds of stream:

* :class:`SequentialStream` -- consumed in event order (the referral arrival
  process).
* :class:`PatientStream` -- indexed by ``(episode, patient id)``.  Patient 17's
  length of stay in IOP is the same number in every scenario, whatever order
  patients happen to reach IOP in.  This keeps CRN synchronised even when a
  change of capacity reorders events.  Values come in blocks, each seeded from
  its own position, so any index is reachable without drawing the ones before.
* :class:`PatientSeries` -- a sequence of values per ``(episode, patient id)``
  (an IOP client's attendance at one session after another), drawn in blocks
  of 256 patients x 64 values, so one generator serves 256 patients instead of
  one each.
"""

from __future__ import annotations

import hashlib
from array import array

import numpy as np

BLOCK = 256


def name_key(name: str) -> int:
    """A stable 64-bit integer for a stream name (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def generator(seed: int, replication: int, name: str, *extra: int) -> np.random.Generator:
    """A numpy Generator whose state depends only on the arguments."""
    ss = np.random.SeedSequence(entropy=[seed, replication, name_key(name), *extra])
    return np.random.Generator(np.random.PCG64(ss))


class SequentialStream:
    """Values consumed in order, transformed by ``transform`` (e.g. a ppf) in blocks."""

    __slots__ = ("_rng", "_transform", "_buf", "_pos")

    def __init__(self, seed: int, replication: int, name: str, transform=None):
        self._rng = generator(seed, replication, name)
        self._transform = transform
        self._buf: list[float] = []
        self._pos = 0

    def next(self) -> float:
        if self._pos >= len(self._buf):
            u = self._rng.random(BLOCK)
            self._buf = (self._transform(u) if self._transform is not None else u).tolist()
            self._pos = 0
        v = self._buf[self._pos]
        self._pos += 1
        return v


class PatientStream:
    """Per-patient values: ``stream[episode, index]`` is fixed by the seed alone."""

    __slots__ = ("_seed", "_rep", "_name", "_transform", "_blocks")

    def __init__(self, seed: int, replication: int, name: str, transform=None):
        self._seed = seed
        self._rep = replication
        self._name = name
        self._transform = transform
        self._blocks: dict[tuple[int, int], array] = {}

    def get(self, episode: int, index: int) -> float:
        b, i = divmod(index, BLOCK)
        block = self._blocks.get((episode, b))
        if block is None:
            u = generator(self._seed, self._rep, self._name, episode, b).random(BLOCK)
            # An array of doubles: 8 bytes a value kept for the whole run, where a list of floats is 32.
            block = array("d", np.asarray(self._transform(u) if self._transform is not None else u, dtype=float).tobytes())
            self._blocks[(episode, b)] = block
        return block[i]


SERIES_COLS = 64


class PatientSeries:
    """Per-patient sequences: ``chunk(episode, index, k)`` is values ``64k .. 64k+63`` of that
    patient's sequence, fixed by the seed alone (whichever patients were served before)."""

    __slots__ = ("_seed", "_rep", "_name", "_blocks")

    def __init__(self, seed: int, replication: int, name: str):
        self._seed = seed
        self._rep = replication
        self._name = name
        self._blocks: dict[tuple[int, int, int], np.ndarray] = {}

    def chunk(self, episode: int, index: int, k: int) -> list[float]:
        b, i = divmod(index, BLOCK)
        key = (episode, b, k)
        block = self._blocks.get(key)
        if block is None:
            block = generator(self._seed, self._rep, self._name, episode, b, k).random((BLOCK, SERIES_COLS))
            self._blocks[key] = block
        return block[i].tolist()


class Streams:
    """Factory for the named streams of one replication."""

    def __init__(self, seed: int, replication: int):
        self.seed = seed
        self.replication = replication
        self._names: set[str] = set()

    def _claim(self, name: str) -> None:
        # One consumer per stream: two decisions sharing a stream would couple them.
        if name in self._names:
            raise ValueError(f"random stream {name!r} created twice")
        self._names.add(name)

    def sequential(self, name: str, transform=None) -> SequentialStream:
        self._claim(name)
        return SequentialStream(self.seed, self.replication, name, transform)

    def patient(self, name: str, transform=None) -> PatientStream:
        self._claim(name)
        return PatientStream(self.seed, self.replication, name, transform)

    def series(self, name: str) -> PatientSeries:
        self._claim(name)
        return PatientSeries(self.seed, self.replication, name)
