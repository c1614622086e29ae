"""Which examples each split holds. For comic_faces: the builder's pair-grouped splits
('pairs'), or a study's own scheme, computed at load time from each example's class and
its position in its class folder sorted by file name (neither study kept a face and its
comic together). For any dataset: its own splits ('own'), those it lacks carved from its
training split (`carve`), or the TFDS split strings that config.dataset.splits gives."""
from __future__ import annotations

from typing import Callable

import numpy as np

from comicface import errors


def _sorted_class(labels: np.ndarray, index_in_class: np.ndarray, c: int) -> np.ndarray:
  members = np.flatnonzero(labels == c)
  return members[np.argsort(index_in_class[members], kind='stable')]


def cnn_study(labels: np.ndarray, index_in_class: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """The first 40% of each class (4,000 of 10,000), shuffled, 80/20 train/test, then
  10% of train for validation (5,760 / 640 / 1,600)."""
  chosen = np.concatenate([m[: len(m) * 4 // 10] for m in (
      _sorted_class(labels, index_in_class, c) for c in np.unique(labels))])
  chosen = np.random.default_rng(seed).permutation(chosen)
  n_train = len(chosen) * 8 // 10
  n_val = n_train // 10
  return {'train': chosen[n_val:n_train], 'validation': chosen[:n_val], 'test': chosen[n_train:]}


def mlp_study(labels: np.ndarray, index_in_class: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
  """Per class the first 50% train, the next 20% validation, the last 30% test
  (5,000 / 2,000 / 3,000 of each class of 10,000)."""
  del seed  # no shuffling in this scheme
  parts = {'train': [], 'validation': [], 'test': []}
  for c in np.unique(labels):
    members = _sorted_class(labels, index_in_class, c)
    a, b = len(members) * 5 // 10, len(members) * 7 // 10
    for name, part in zip(parts, (members[:a], members[a:b], members[b:])):
      parts[name].append(part)
  return {k: np.concatenate(v) for k, v in parts.items()}


def carve(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
  """Splits positions `range(len(labels))` into one part per fraction ({'test': 0.1,
  'validation': 0.1}, taken in that order; each at least one example) and 'train' (the rest),
  stratified: the positions are shuffled (seeded), ranked within their class, and taken in
  order of rank over class size, so each part holds each class in its share. Each part is sorted."""
  n = len(labels)
  order = np.random.default_rng(seed).permutation(n)
  rank = np.empty(n)
  for c in np.unique(labels):
    members = order[labels[order] == c]
    rank[members] = (np.arange(len(members)) + 0.5) / len(members)
  order = order[np.argsort(rank[order], kind='stable')]
  parts, start = {}, 0
  for name, fraction in fractions.items():
    take = max(1, round(n * fraction)) if fraction > 0 else 0
    parts[name] = np.sort(order[start:start + take])
    start += take
  if start >= n:
    raise errors.ConfigError(f'{n} training examples are too few to carve {fractions} from them and keep '
                             'some to train on: lower config.dataset.validation_fraction or test_fraction.')
  return {'train': np.sort(order[start:]), **parts}


COMPUTED: dict[str, Callable[..., dict[str, np.ndarray]]] = {'cnn_study': cnn_study, 'mlp_study': mlp_study}
SCHEMES = ('pairs', *COMPUTED, 'own')  # every value of config.dataset.split_scheme
COMIC_FACES_SCHEMES = ('pairs', *COMPUTED)  # those of comic_faces alone
