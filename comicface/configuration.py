"""Checks on a config before any work starts."""
from __future__ import annotations

import jax
import ml_collections

from comicface import errors
from comicface import models


class ConfigError(errors.UserError, ValueError):
  """A config field holds a value that cannot work."""


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the field and its valid range."""
  def need(ok: bool, field: str, valid: str) -> None:
    if not ok:
      raise ConfigError(f'config.{field}={_get(config, field)!r} is invalid: must be {valid}.')
  need(config.model.name in models.MODELS, 'model.name', f'one of {sorted(models.MODELS)}')
  need(config.learning_rate > 0, 'learning_rate', '> 0')
  need(config.num_epochs >= 1, 'num_epochs', '>= 1')
  need(config.steps_per_call >= 1, 'steps_per_call', '>= 1')
  need(config.predict_chunk >= 0, 'predict_chunk', '>= 0 (0: the whole batch)')
  need(config.cpu_slice_images >= 0, 'cpu_slice_images', '>= 0 (0: the whole batch)')
  need(config.optimizer in ('adam', 'sgd'), 'optimizer', "'adam' or 'sgd'")
  need(config.dtype in ('float32', 'bfloat16'), 'dtype', "'float32' or 'bfloat16'")
  need(config.model.input_scaling in ('unit', 'imagenet'), 'model.input_scaling', "'unit' or 'imagenet'")
  need(config.grid_parallel in ('auto', 'stacked', 'sequential'), 'grid_parallel',
       "'auto', 'stacked' or 'sequential'")
  need(config.test_checkpoint in ('best', 'last'), 'test_checkpoint', "'best' or 'last'")
  need(config.dataset.split_scheme in ('pairs', 'cnn_study', 'mlp_study'), 'dataset.split_scheme',
       "'pairs', 'cnn_study' or 'mlp_study'")
  need(0 < config.dataset.max_bad_fraction <= 1, 'dataset.max_bad_fraction', 'in (0, 1]')
  if config.model.name == 'cnn':
    need(0 <= config.model.dropout_rate < 1, 'model.dropout_rate', 'in [0, 1)')
    need(config.model.filters_1 >= 1 and config.model.filters_2 >= 1, 'model.filters_1',
         'filters_1 and filters_2 >= 1')
  n = jax.device_count()
  need(config.batch_size >= 1 and config.batch_size % n == 0, 'batch_size',
       f'a positive multiple of the device count ({n})')
  if not config.dataset.manual_dir:
    need(config.dataset.synthetic_pairs >= 25, 'dataset.synthetic_pairs', '>= 25 (fewer leave a split empty)')


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config
