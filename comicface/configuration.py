"""Checks on a config before any work starts: each bad value is a ConfigError naming it."""
from __future__ import annotations

import ast
from typing import Sequence

import jax
import ml_collections

from comicface import errors
from comicface import models
from comicface import splits


SEARCHES = ('grid', 'random', 'halving', 'bayesian')  # search.PLANS holds each one's plan


def get(config: ml_collections.ConfigDict, dotted: str):
  """The field `dotted` ('dataset.name') of `config`."""
  for part in dotted.split('.'):
    config = config[part]
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field and its valid range."""
  def need(ok: bool, field: str, valid: str) -> None:
    if not ok:
      raise errors.ConfigError(f'config.{field}={get(config, field)!r} is invalid: must be {valid}.')

  def one_of(field: str, choices: tuple) -> None:
    need(get(config, field) in choices, field, f'one of {list(choices)}')
  models.validate(config.model)
  need(config.learning_rate > 0, 'learning_rate', '> 0')
  need(config.num_epochs >= 1, 'num_epochs', '>= 1')
  one_of('optimizer', ('adam', 'sgd'))
  one_of('dtype', ('float32', 'bfloat16'))
  one_of('grid_parallel', ('auto', 'sequential', 'stacked', 'parallel'))
  shard = config.shard.split('/')
  need(config.shard in ('', 'auto') or (len(shard) == 2 and all(s.isdigit() for s in shard)
                                         and int(shard[0]) < int(shard[1])), 'shard', "'auto', '' or 'i/N' with i < N")
  one_of('test_checkpoint', ('best', 'last'))
  one_of('dataset.split_scheme', splits.SCHEMES)
  need(0 < config.dataset.max_bad_fraction <= 1, 'dataset.max_bad_fraction', 'in (0, 1]')
  for field, empty in (('train_splits', False), ('retrain_splits', True)):
    splits_given = get(config, field)
    need((empty or len(splits_given) > 0) and set(splits_given) <= {'train', 'validation'}, field,
         "of 'train' and 'validation' (the test split is for the test)" + (', or () for none' if empty else ''))
  n = jax.device_count()
  need(config.batch_size >= 1 and config.batch_size % n == 0, 'batch_size',
       f'a positive multiple of the device count ({n})')
  if not config.dataset.manual_dir:
    need(config.dataset.synthetic_pairs >= 25, 'dataset.synthetic_pairs', '>= 25 (fewer leave a split empty)')
    need(0 <= config.dataset.synthetic_difficulty <= 1, 'dataset.synthetic_difficulty', 'in [0, 1]')
  one_of('search', SEARCHES)
  need(bool(config.grid) or config.search == 'grid', 'search', "'grid' where config.grid has no axes to search")
  need(config.num_trials >= 1, 'num_trials', '>= 1')
  need(config.seeds >= 1, 'seeds', '>= 1')
  need(config.bayesian_batch >= 1, 'bayesian_batch', '>= 1')
  need(config.halving.factor >= 2, 'halving.factor', '>= 2')
  need(1 <= config.halving.min_epochs <= config.num_epochs, 'halving.min_epochs', f'in [1, num_epochs={config.num_epochs}]')
  need(config.halving.brackets >= 1, 'halving.brackets', '>= 1')
  stopping = config.early_stopping
  one_of('early_stopping.monitor', ('', 'val_loss', 'val_accuracy', 'train_loss', 'train_accuracy'))
  one_of('early_stopping.mode', ('auto', 'min', 'max'))
  need(stopping.patience >= 0 and stopping.min_delta >= 0 and stopping.start_from_epoch >= 0,
       'early_stopping.patience', '>= 0, as min_delta and start_from_epoch')
  need(config.checkpoint_seconds >= 0, 'checkpoint_seconds', '>= 0 (0: a checkpoint every epoch)')
  one_of('speed.kernels', ('auto', 'xla', 'cpu'))
  one_of('speed.feed', ('auto', 'resident', 'stream'))
  calls = config.speed.steps_per_call
  need(calls == 'auto' or str(calls).isdigit() and int(calls) >= 1, 'speed.steps_per_call', "'auto' or >= 1")
  need(config.speed.predict_chunk >= 0, 'speed.predict_chunk', '>= 0 (0: the whole batch)')
  need(config.speed.cpu_slice_images >= 0, 'speed.cpu_slice_images', '>= 0 (0: the whole batch)')


def add_grid_axes(config: ml_collections.ConfigDict, axes: Sequence[tuple[str, str]]) -> None:
  """Sets each grid axis ('model.filters_1', '(8, 16)') in `config.grid`, which may lack it
  even where the config is locked; a value reads as Python reads it ('(1e-2, 1e-3)' is a
  tuple), else as the string it is ('log_uniform(1e-4, 1e-1)')."""
  with config.grid.unlocked():
    for dotted, text in axes:
      *parents, leaf = dotted.split('.')
      grid = config.grid
      for part in parents:
        if part not in grid:
          grid[part] = ml_collections.ConfigDict(type_safe=False)
        grid = grid[part]
      try:
        grid[leaf] = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        grid[leaf] = text
