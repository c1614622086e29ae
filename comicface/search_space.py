"""The trials of a search: `config.grid` mirrors the config, one axis per field.

    grid.model.filters_1 = (100, 200)     values: a grid axis, a choice for random draws
    grid.learning_rate = 'log_uniform(1e-4, 1e-1)'   a range, for random draws (and TPE):
                                          'uniform(a, b)', 'log_uniform(a, b)', 'int_uniform(a, b)'
    grid.num_epochs = (1, 3, 5)           epoch counts, read off each trial's validation curve

A trial is the config with one value per axis. Trials that differ only in values
(the learning rate, the model's VALUES) stack: they train as one vmapped run.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Any

import ml_collections
import numpy as np

from comicface import configuration
from comicface import errors
from comicface import optimizers

EPOCHS = 'num_epochs'


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  values: dict[str, Any]  # grid axis (dotted) -> value, the epochs axis excluded
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Range:
  """A range to draw values from: 'uniform', 'log_uniform' or 'int_uniform' (both ends in)."""
  kind: str
  low: float
  high: float

  def draw(self, rng: np.random.Generator) -> float | int:
    if self.kind == 'int_uniform':
      return int(rng.integers(int(self.low), int(self.high) + 1))
    if self.kind == 'log_uniform':
      return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
    return float(rng.uniform(self.low, self.high))


_RANGE = re.compile(r'\s*(uniform|log_uniform|int_uniform)\(\s*([^,\s]+)\s*,\s*([^)\s]+)\s*\)\s*$')


def _axis(dotted: str, spec: Any) -> tuple | Range:
  if isinstance(spec, str) and '(' in spec:
    match = _RANGE.match(spec)
    if not match:
      raise errors.ConfigError(f"config.grid.{dotted}={spec!r} is invalid: a range is 'uniform(a, b)', "
                               "'log_uniform(a, b)' or 'int_uniform(a, b)'.")
    kind, low, high = match.group(1), float(match.group(2)), float(match.group(3))
    if not low < high or (kind == 'log_uniform' and low <= 0):
      raise errors.ConfigError(f'config.grid.{dotted}={spec!r} is invalid: needs low < high (and > 0 for log).')
    return Range(kind, low, high)
  return tuple(spec) if isinstance(spec, (list, tuple)) else (spec,)


def axes(config: ml_collections.ConfigDict) -> dict[str, tuple | Range]:
  """`config.grid` flattened to dotted keys, in the order written: values or a Range."""
  def flat(d, prefix=''):
    for k, v in d.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        yield from flat(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', _axis(f'{prefix}{k}', v)
  return dict(flat(config.grid))


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split('.')
  for p in parents:
    if p not in config or not isinstance(config[p], ml_collections.ConfigDict):
      raise errors.ConfigError(f'config.grid names {dotted!r}, which is not a config field.')
    config = config[p]
  if leaf not in config:
    raise errors.ConfigError(f'config.grid names {dotted!r}, which is not a config field.')
  try:
    config[leaf] = type(config[leaf])(value) if isinstance(config[leaf], (int, float)) else value
  except (TypeError, ValueError):
    raise errors.ConfigError(f'config.grid.{dotted} holds {value!r}, which config.{dotted} '
                             f'({type(config[leaf]).__name__}) cannot take.') from None


def trial(config: ml_collections.ConfigDict, index: int, values: dict[str, Any], epochs: int) -> Trial:
  """Trial `index` of `config`: its values set, `epochs` epochs, no grid of its own."""
  c = ml_collections.ConfigDict(config.to_dict())
  for k, v in values.items():
    _set(c, k, v)
  c.num_epochs = epochs
  c.grid, c.search = ml_collections.ConfigDict(), 'grid'  # a trial is one run, not a search
  configuration.validate(c)
  shown = lambda v: f'{v:.4g}' if isinstance(v, float) else str(v)
  name = f'{index:03d}_' + '_'.join(f'{k.split(".")[-1]}={shown(v)}' for k, v in values.items())
  return Trial(name, values, c)


def _ends(axis: tuple | Range) -> tuple:
  """An axis's values, or a range's two ends: what every trial's check is made at."""
  if not isinstance(axis, Range):
    return axis
  return (int(axis.low), int(axis.high)) if axis.kind == 'int_uniform' else (axis.low, axis.high)


def _only_values(grid: dict[str, tuple | Range]) -> None:
  """Raises ConfigError if an axis of `grid` is a range, which a grid cannot enumerate."""
  ranged = [k for k, v in grid.items() if isinstance(v, Range)]
  if ranged:
    raise errors.ConfigError(f'config.grid.{ranged[0]} is a range, which a grid cannot enumerate: give values, '
                             "or draw from it with config.search='random' (or 'halving', 'bayesian').")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks `config.grid` before anything is written: each axis names a config field and
  holds values (or a range), and every trial that a search may make of it is a valid config:
  each combination of the axes' values, a range at either end, for every search ('grid',
  'random', 'halving' and Hyperband's draws, TPE's asks). The model's fields are checked apart
  from the rest (`models.validate`), so the combinations of the model's axes are checked with
  the other axes at their first values, and the other way round. Raises ConfigError naming
  the trial's values and what is wrong."""
  for dotted, axis in axes(config).items():
    if isinstance(axis, tuple) and not axis:
      raise errors.ConfigError(f'config.grid.{dotted} is empty: give it at least one value.')
    bad = dotted == EPOCHS and [e for e in axis if not isinstance(e, int) or isinstance(e, bool) or e < 1]
    if bad:
      raise errors.ConfigError(f'config.grid.{dotted}={axis!r} is invalid: epoch counts must be integers >= 1.')
  trials, epochs = space(config), max(epochs_to_read(config))
  if config.search == 'grid':
    _only_values(trials)
  first = {k: _ends(v)[0] for k, v in trials.items()}
  model = [k for k in trials if k.startswith('model.')]
  for group in (model, [k for k in trials if k not in model]):
    for combination in itertools.product(*(_ends(trials[k]) for k in group)):
      values = dict(zip(group, combination))
      try:
        trial(config, 0, {**first, **values}, epochs)
      except errors.ConfigError as e:
        shown = ', '.join(f'{k}={v!r}' for k, v in values.items())
        raise errors.ConfigError(f'config.grid makes a trial of {shown}, which is invalid: {e}') from None


def epochs_to_read(config: ml_collections.ConfigDict) -> list[int]:
  """The epoch counts a trial is read off at: the epochs axis, else 1..num_epochs."""
  return sorted(int(e) for e in axes(config).get(EPOCHS, ())) or list(range(1, config.num_epochs + 1))


def space(config: ml_collections.ConfigDict) -> dict[str, tuple | Range]:
  """The axes that make trials (all but the epochs axis)."""
  return {k: v for k, v in axes(config).items() if k != EPOCHS}


def has_ranges(config: ml_collections.ConfigDict) -> bool:
  return any(isinstance(v, Range) for v in space(config).values())


def expand(config: ml_collections.ConfigDict) -> list[Trial]:
  """The grid's trials: the product of its axes."""
  grid = space(config)
  _only_values(grid)
  epochs = max(epochs_to_read(config))
  return [trial(config, i, dict(zip(grid, combo)), epochs) for i, combo in enumerate(itertools.product(*grid.values()))]


def draws(config: ml_collections.ConfigDict) -> list[Trial]:
  """`config.num_trials` random trials (`draw`)."""
  return [draw(config, i) for i in range(config.num_trials)]


def draw(config: ml_collections.ConfigDict, index: int, stream: int = 0) -> Trial:
  """Random trial `index` of `config`: each axis a uniform choice of its values or a draw
  from its range, by a generator seeded with (seed, stream, index) alone, so that raising
  the number of draws keeps the earlier ones."""
  rng = np.random.default_rng([config.seed, stream, index])
  values = {k: v.draw(rng) if isinstance(v, Range) else v[int(rng.integers(len(v)))]
            for k, v in space(config).items()}
  return trial(config, index, values, max(epochs_to_read(config)))


def stack_key(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """`config` without its values (`configuration.ROLES`), but which of them are on
  (`optimizers.switches`: compiled): trials equal in it can train as one stack."""
  c = config.to_dict()
  for dotted in configuration.fields(config, 'value'):
    node, leaf = configuration.parent(c, dotted)
    node.pop(leaf)
  return ml_collections.FrozenConfigDict({**c, **optimizers.switches(config)})


def groups(trials: list[Trial], mode: str) -> list[list[Trial]]:
  """Sequential: one trial a run. Stacked: trials that differ only in values share a run."""
  if mode == 'sequential':
    return [[t] for t in trials]
  by_key: dict[ml_collections.FrozenConfigDict, list[Trial]] = {}
  for t in trials:
    by_key.setdefault(stack_key(t.config), []).append(t)
  return list(by_key.values())
