"""The trials of a search: `config.grid` mirrors the config, one axis per field.

    grid.model.filters_1 = (100, 200)     values (a grid axis; a choice for random search)
    grid.learning_rate = (1e-2, 1e-3)
    grid.num_epochs = (1, 3, 5)           epoch counts, read off each trial's validation curve

A trial is the config with one value per axis. Trials that differ only in values
(the learning rate, the model's VALUES) stack: they train as one vmapped run.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ml_collections

from comicface import configuration
from comicface import errors
from comicface import models

EPOCHS = 'num_epochs'


@dataclasses.dataclass(frozen=True)
class Trial:
  name: str
  values: dict[str, Any]  # grid axis (dotted) -> value, the epochs axis excluded
  config: ml_collections.ConfigDict


def axes(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """`config.grid` flattened to dotted keys, in the order written."""
  def flat(d, prefix=''):
    for k, v in d.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        yield from flat(v, f'{prefix}{k}.')
      else:
        yield f'{prefix}{k}', tuple(v) if isinstance(v, (list, tuple)) else (v,)
  return dict(flat(config.grid))


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split('.')
  for p in parents:
    config = config[p]
  if leaf not in config:
    raise errors.ConfigError(f'config.grid names {dotted!r}, which is not a config field.')
  config[leaf] = type(config[leaf])(value) if isinstance(config[leaf], (int, float)) else value


def trial(config: ml_collections.ConfigDict, index: int, values: dict[str, Any], epochs: int) -> Trial:
  """Trial `index` of `config`: its values set, `epochs` epochs, no grid of its own."""
  c = ml_collections.ConfigDict(config.to_dict())
  for k, v in values.items():
    _set(c, k, v)
  c.num_epochs = epochs
  c.grid = ml_collections.ConfigDict()
  configuration.validate(c)
  name = f'{index:03d}_' + '_'.join(f'{k.split(".")[-1]}={v}' for k, v in values.items())
  return Trial(name, values, c)


def epochs_to_read(config: ml_collections.ConfigDict) -> list[int]:
  """The epoch counts a trial is read off at: the epochs axis, else 1..num_epochs."""
  return sorted(int(e) for e in axes(config).get(EPOCHS, ())) or list(range(1, config.num_epochs + 1))


def expand(config: ml_collections.ConfigDict) -> tuple[list[Trial], list[int]]:
  """The grid's trials (the product of its axes) and the epoch counts to read off."""
  grid = {k: v for k, v in axes(config).items() if k != EPOCHS}
  epochs = epochs_to_read(config)
  return [trial(config, i, dict(zip(grid, combo)), max(epochs))
          for i, combo in enumerate(itertools.product(*grid.values()))], epochs


def stack_key(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """`config` without its values: trials equal in it can train as one stack."""
  c = config.to_dict()
  c.pop('learning_rate')
  for k in models.values(config.model):
    c['model'].pop(k, None)
  return ml_collections.FrozenConfigDict(c)


def groups(trials: list[Trial], mode: str) -> list[list[Trial]]:
  """Sequential: one trial a run. Stacked: trials that differ only in values share a run."""
  if mode == 'sequential':
    return [[t] for t in trials]
  by_key: dict[ml_collections.FrozenConfigDict, list[Trial]] = {}
  for t in trials:
    by_key.setdefault(stack_key(t.config), []).append(t)
  return list(by_key.values())
