"""Checks on a config before any work starts: each bad value is a ConfigError naming it."""
from __future__ import annotations

import ast
import re
from typing import Any, Callable, Sequence

import jax
import ml_collections

from comicface import augment
from comicface import errors
from comicface import metrics
from comicface import models
from comicface import optimizers
from comicface import splits


SEARCHES = ('grid', 'random', 'halving', 'bayesian')  # search/plans.py: PLANS holds each one's plan

# What each config field is to a run; the rest of the code derives from this table which
# fields make a workdir's identity (workdir.identity), compile the steps (steps.static_config),
# may differ in a stack (steps.hyperparameters, search_space.stack_key) and make a budget.
#   static    compiled into the steps, and part of what a workdir's checkpoints mean
#   value     passed to the steps as a number: stacked trials may differ in it; part of the identity
#   identity  part of what the checkpoints mean, neither compiled nor a value
#   budget    how much: a finished run or search asked for more continues
#   speed     compiled into the steps, but not part of the identity: how fast, not what
#   free      none of these (logging, where things go)
# 'model' is static but for the model's own VALUES (models.values), which are values.
ROLES = {
    'dataset.name': 'identity', 'dataset.manual_dir': 'identity', 'dataset.data_dir': 'free',
    'dataset.max_bad_fraction': 'free', 'dataset.split_scheme': 'identity', 'dataset.synthetic_pairs': 'identity',
    'dataset.synthetic_size': 'identity', 'dataset.synthetic_seed': 'identity',
    'dataset.synthetic_difficulty': 'identity', 'dataset.synthetic_classes': 'identity',
    'dataset.image_size': 'identity', 'dataset.mode': 'identity', 'dataset.image_key': 'identity',
    'dataset.label_key': 'identity', 'dataset.splits': 'identity', 'dataset.validation_fraction': 'identity',
    'dataset.test_fraction': 'identity', 'dataset.split_seed': 'identity',
    'model': 'static', 'dtype': 'static', 'batch_size': 'static', 'augment': 'static',
    'grad_accum_steps': 'static', 'ema_decay': 'value',
    'optimizer': 'static', 'momentum': 'static', 'nesterov': 'static', 'grad_clip_norm': 'static',
    'schedule': 'static', 'warmup_epochs': 'static', 'schedule_epochs': 'identity', 'learning_rate': 'value', 'weight_decay': 'value',
    'num_epochs': 'budget', 'train_splits': 'identity', 'test_checkpoint': 'free', 'best_by': 'identity',
    'seed': 'identity', 'early_stopping': 'identity', 'init': 'identity',
    'grid': 'identity', 'search': 'identity', 'num_trials': 'budget', 'halving': 'identity',
    'bayesian_batch': 'identity', 'seeds': 'identity', 'grid_parallel': 'free', 'shard': 'free',
    'retrain_splits': 'budget',
    'log_every_steps': 'free', 'keep_checkpoints': 'free', 'checkpoint_seconds': 'free', 'speed': 'speed',
}
IDENTITY_ROLES = ('static', 'value', 'identity')
# What every run had before a field existed: a workdir recorded without the field had this.
BEFORE_THE_FIELD = {'momentum': 0.0, 'nesterov': False, 'weight_decay': 0.0, 'grad_clip_norm': 0.0,
                    'schedule': 'constant', 'warmup_epochs': 0.0, 'schedule_epochs': 0, 'best_by': 'val_accuracy',
                    'checkpoint_seconds': 0.0, 'speed.feed': 'auto', 'augment': '', 'ema_decay': 0.0,
                    'grad_accum_steps': 1, 'init': {'workdir': '', 'step': 0, 'skip': []}}
# Top-level fields an earlier release had under another name: its name -> (the field now, its
# value from the old one).
RENAMED = {'augment_hflip': ('augment', lambda hflip: 'flip_lr' if hflip else '')}


def renamed(recorded: dict) -> dict:
  """A config or identity recorded by an earlier release, its fields under their names now (RENAMED)."""
  out = dict(recorded)
  for old, (new, convert) in RENAMED.items():
    if old in out:
      out[new] = convert(out.pop(old))
  return out


def identity_now(recorded: dict) -> dict:
  """A workdir's or a search plan's recorded identity (`workdir.identity`) as this release
  writes it: renamed fields under their names now, fields it predates as they were."""
  return {**BEFORE_THE_FIELD, **renamed(recorded)}


def with_earlier_fields(recorded: dict) -> ml_collections.ConfigDict:
  """A config recorded by an earlier release, with the fields it predates (BEFORE_THE_FIELD)
  and under their names now (RENAMED)."""
  config = ml_collections.ConfigDict(renamed(recorded))
  for dotted, value in BEFORE_THE_FIELD.items():
    node, leaf = parent(config, dotted)
    if leaf not in node:
      node[leaf] = value
  return config


def parent(tree: Any, dotted: str, make: Callable[[], Any] | None = None) -> tuple[Any, str]:
  """The node of `tree` (a config or a dict) that holds the field `dotted` ('model.filters_1'),
  and the field's own name; `make()` makes the nodes missing on the way (else: KeyError)."""
  *parents, leaf = dotted.split('.')
  for part in parents:
    if make is not None and part not in tree:
      tree[part] = make()
    tree = tree[part]
  return tree, leaf


def get(config: ml_collections.ConfigDict, dotted: str):
  """The field `dotted` ('dataset.name') of `config`."""
  node, leaf = parent(config, dotted)
  return node[leaf]


def fields(config: ml_collections.ConfigDict, *roles: str) -> list[str]:
  """The fields of `config` (dotted) whose role is one of `roles`; the model's fields one by one."""
  out = []
  for name, role in ROLES.items():
    if name != 'model':
      out += [name] if role in roles else []
      continue
    values = models.values(config.model)
    out += [f'model.{k}' for k in config.model if ('value' if k in values else role) in roles]
  return out


def subset(config: ml_collections.ConfigDict, dotted_fields: Sequence[str]) -> dict:
  """The `dotted_fields` of `config` as a nested dict of plain values."""
  out: dict = {}
  for dotted in dotted_fields:
    node, leaf = parent(out, dotted, make=dict)
    value = get(config, dotted)
    node[leaf] = value.to_dict() if hasattr(value, 'to_dict') else value
  return out


def classes(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  """The class names of `config.dataset` where they are known before it is built (comic_faces,
  a folder's class folders, a prepared TFDS dataset), else None; ConfigError for an unknown name."""
  from comicface import input_pipeline  # pylint: disable=g-import-not-at-top  (heavier: TFDS, grain)
  task = input_pipeline.Task.of_config(config.dataset)
  return task and task.classes


def check_records(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> None:
  """Raises ConfigError where config.best_by or config.early_stopping.monitor names no record
  of data of `class_names` (checked by `validate` where they are known before the build, else
  by `input_pipeline.prepare` once it is built)."""
  records = metrics.names('val', class_names)
  if config.best_by not in records:
    raise errors.ConfigError(f'config.best_by={config.best_by!r} is invalid: must be a validation record: one of {records}.')
  if config.early_stopping.monitor not in ('', 'train_loss', 'train_accuracy', *records):
    raise errors.ConfigError(f'config.early_stopping.monitor={config.early_stopping.monitor!r} is invalid: must be '
                             f"'' (off), train_loss, train_accuracy, or one of {records}.")


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
  one_of('optimizer', optimizers.NAMES)
  need(0 <= config.momentum < 1 and (config.momentum == 0 or config.optimizer == 'sgd'), 'momentum',
       "in [0, 1), and 0 unless config.optimizer='sgd'")
  need(not config.nesterov or config.momentum > 0, 'nesterov', 'False unless config.momentum > 0')
  need(config.weight_decay >= 0, 'weight_decay', '>= 0')
  need(config.grad_clip_norm >= 0, 'grad_clip_norm', '>= 0 (0: off)')
  one_of('schedule', optimizers.SCHEDULES)
  need(config.schedule_epochs == 0 or config.schedule_epochs >= config.num_epochs, 'schedule_epochs',
       f'0 (num_epochs), or at least num_epochs={config.num_epochs}')
  length = optimizers.schedule_epochs(config)
  need(0 <= config.warmup_epochs <= length, 'warmup_epochs', f'in [0, the schedule\'s {length} epochs]')
  known = classes(config)
  if known is not None:
    check_records(config, known)
  one_of('dtype', ('float32', 'bfloat16'))
  one_of('grid_parallel', ('auto', 'sequential', 'stacked', 'parallel'))
  shard = config.shard.split('/')
  need(config.shard in ('', 'auto') or (len(shard) == 2 and all(s.isdigit() for s in shard)
                                         and int(shard[0]) < int(shard[1])), 'shard', "'auto', '' or 'i/N' with i < N")
  one_of('test_checkpoint', ('best', 'last'))
  one_of('dataset.split_scheme', splits.SCHEMES)
  from comicface import input_pipeline  # pylint: disable=g-import-not-at-top  (heavier: TFDS, grain)
  need(input_pipeline.kind(config.dataset.name) == 'comic_faces' or config.dataset.split_scheme not in splits.COMIC_FACES_SCHEMES,
       'dataset.split_scheme', f"'own' for a dataset other than comic_faces ({list(splits.COMIC_FACES_SCHEMES)} are its own)")
  one_of('dataset.mode', ('', 'L', 'RGB'))
  need(config.dataset.image_size >= 0, 'dataset.image_size', ">= 0 (0: the dataset's own)")
  for field in ('validation_fraction', 'test_fraction'):
    need(0 < config.dataset[field] < 1, f'dataset.{field}', 'in (0, 1)')
  need(not config.dataset.splits or set(config.dataset.splits) == {'train', 'validation', 'test'}, 'dataset.splits',
       "empty, or a TFDS split string for each of 'train', 'validation' and 'test'")
  need(not config.dataset.splits or config.dataset.split_scheme == 'own', 'dataset.split_scheme', "'own' where config.dataset.splits is given")
  need(0 < config.dataset.max_bad_fraction <= 1, 'dataset.max_bad_fraction', 'in (0, 1]')
  for field, empty in (('train_splits', False), ('retrain_splits', True)):
    splits_given = get(config, field)
    need((empty or len(splits_given) > 0) and set(splits_given) <= {'train', 'validation'}, field,
         "of 'train' and 'validation' (the test split is for the test)" + (', or () for none' if empty else ''))
  n = jax.device_count()
  need(config.batch_size >= 1 and config.batch_size % n == 0, 'batch_size',
       f'a positive multiple of the device count ({n})')
  accumulate = config.grad_accum_steps
  need(accumulate >= 1 and config.batch_size % (accumulate * n) == 0, 'grad_accum_steps',
       f'>= 1 (1: off), dividing batch_size={config.batch_size} into micro-batches of a multiple of the device '
       f'count ({n}) each')
  need(0 <= config.ema_decay < 1, 'ema_decay', 'in [0, 1) (0: off)')
  augment.parse(config.augment)
  if not config.dataset.manual_dir:
    need(config.dataset.synthetic_pairs >= 25, 'dataset.synthetic_pairs', '>= 25 (fewer leave a split empty)')
    need(0 <= config.dataset.synthetic_difficulty <= 1, 'dataset.synthetic_difficulty', 'in [0, 1]')
    need(config.dataset.synthetic_classes >= 2, 'dataset.synthetic_classes', '>= 2')
  one_of('search', SEARCHES)
  need(bool(config.grid) or config.search == 'grid', 'search', "'grid' where config.grid has no axes to search")
  need(config.num_trials >= 1, 'num_trials', '>= 1')
  need(config.seeds >= 1, 'seeds', '>= 1')
  need(config.bayesian_batch >= 1, 'bayesian_batch', '>= 1')
  need(config.halving.factor >= 2, 'halving.factor', '>= 2')
  need(1 <= config.halving.min_epochs <= config.num_epochs, 'halving.min_epochs', f'in [1, num_epochs={config.num_epochs}]')
  need(config.halving.brackets >= 1, 'halving.brackets', '>= 1')
  stopping = config.early_stopping
  one_of('early_stopping.mode', ('auto', 'min', 'max'))
  need(stopping.patience >= 0 and stopping.min_delta >= 0 and stopping.start_from_epoch >= 0,
       'early_stopping.patience', '>= 0, as min_delta and start_from_epoch')
  need(config.checkpoint_seconds >= 0, 'checkpoint_seconds', '>= 0 (0: a checkpoint every epoch)')
  need(config.init.step >= 0, 'init.step', '>= 0 (0: the checkpoint its training tested)')
  need(bool(config.init.workdir) or not (config.init.step or config.init.skip), 'init.workdir',
       "a run's or a search's workdir where config.init.step or config.init.skip is set")
  need(all(isinstance(s, str) and _compiles(s) for s in config.init.skip), 'init.skip',
       "regular expressions over the parameters' paths, e.g. ('params/Dense_0/.*',)")
  one_of('speed.kernels', ('auto', 'xla', 'cpu'))
  one_of('speed.feed', ('auto', 'resident', 'stream'))
  calls = config.speed.steps_per_call
  need(calls == 'auto' or str(calls).isdigit() and int(calls) >= 1, 'speed.steps_per_call', "'auto' or >= 1")
  need(config.speed.predict_chunk >= 0, 'speed.predict_chunk', '>= 0 (0: the whole batch)')
  need(config.speed.cpu_slice_images >= 0, 'speed.cpu_slice_images', '>= 0 (0: the whole batch)')


def _compiles(pattern: str) -> bool:
  try:
    re.compile(pattern)
  except re.error:
    return False
  return True


def add_grid_axes(config: ml_collections.ConfigDict, axes: Sequence[tuple[str, str]]) -> None:
  """Sets each grid axis ('model.filters_1', '(8, 16)') in `config.grid`, which may lack it
  even where the config is locked; a value reads as Python reads it ('(1e-2, 1e-3)' is a
  tuple), else as the string it is ('log_uniform(1e-4, 1e-1)')."""
  with config.grid.unlocked():
    for dotted, text in axes:
      grid, leaf = parent(config.grid, dotted, make=lambda: ml_collections.ConfigDict(type_safe=False))
      try:
        grid[leaf] = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        grid[leaf] = text
