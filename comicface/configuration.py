"""Checks on a config before any work starts, and the workdir's claim to one config."""
from __future__ import annotations

import json
import pathlib

import jax
import ml_collections

from comicface import models

# Fields that change what a workdir's checkpoints mean; the rest (logging, the
# number of epochs, checkpoints kept) may change between runs of one workdir.
_IDENTITY = ('dataset.name', 'dataset.manual_dir', 'dataset.split_scheme', 'dataset.synthetic_pairs',
             'dataset.synthetic_size', 'dataset.synthetic_seed', 'model', 'dtype',
             'optimizer', 'augment_hflip', 'learning_rate', 'batch_size', 'train_splits', 'seed', 'grid')


class ConfigError(ValueError):
  """A config field holds a value that cannot work."""


class WorkdirConflictError(RuntimeError):
  """The workdir holds a run of another config."""


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
    need(config.dataset.synthetic_pairs >= 10, 'dataset.synthetic_pairs', '>= 10')


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def _identity(config: ml_collections.ConfigDict) -> dict:
  return {k: json.loads(json.dumps(_get(config, k).to_dict() if hasattr(_get(config, k), 'to_dict')
                                   else _get(config, k))) for k in _IDENTITY}


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds a run of `config` (False: no run yet).

  Raises WorkdirConflictError, listing the differing fields, if it holds a run
  of another model, dataset or optimisation.
  """
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    return False
  mine, theirs = _identity(config), json.loads(path.read_text())['identity']
  diff = {k: (theirs.get(k), mine[k]) for k in mine if theirs.get(k) != mine[k]}
  if diff:
    lines = '\n'.join(f'  {k}: workdir has {a!r}, config has {b!r}' for k, (a, b) in diff.items())
    raise WorkdirConflictError(f'{workdir} belongs to another config:\n{lines}\n'
                               'Use a new --workdir, or the config that made it.')
  return True


def claim_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Checks the workdir (see `check_workdir`), recording the config in a new one."""
  if not check_workdir(config, workdir) and jax.process_index() == 0:
    path = pathlib.Path(workdir) / 'config.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')  # other processes may be reading: write, then rename
    tmp.write_text(json.dumps({'identity': _identity(config), 'config': config.to_dict()}, indent=2))
    tmp.replace(path)
