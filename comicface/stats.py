"""Statistics of results: confidence intervals, and paired comparisons of two models."""
from __future__ import annotations

import math

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a proportion k/n (sensible at 0 or n errors)."""
  if n == 0:
    return (0.0, 1.0)
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value: the chance, were A and B equally accurate, of a split
  of the discordant examples (right for A only, right for B only) at least this uneven.
  The binomial test of min(only_a, only_b) among only_a + only_b at p = 1/2."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  k = min(only_a, only_b)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
  """McNemar's exact test of two classifiers' per-example correctness on the same examples."""
  a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
  return {'examples': int(a.size), 'right_only_first': only_a, 'right_only_second': only_b,
          'p_value': mcnemar_exact(only_a, only_b)}


def pack(correct: np.ndarray) -> str:
  """Per-example correctness (booleans) as a hex string, 1 bit each."""
  return np.packbits(np.asarray(correct, bool)).tobytes().hex()


def unpack(packed: str, n: int) -> np.ndarray:
  return np.unpackbits(np.frombuffer(bytes.fromhex(packed), np.uint8))[:n].astype(bool)
