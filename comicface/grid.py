"""The hyper-parameter grid of `config.grid`: run every trial, select on
validation, retrain the winner, test it once, and report.

`config.grid` mirrors the config (`grid.model.filters_1 = (100, 200)`,
`grid.learning_rate = (1e-2, 1e-3)`); a `num_epochs` axis costs nothing: each
trial trains for the largest value and is read off its per-epoch validation
curve. Trials that differ only in values (learning rate, dropout rate) can be
stacked and trained as one vmapped run (`config.grid_parallel`).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import pathlib
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from comicface import configuration
from comicface import input_pipeline
from comicface import logs
from comicface import report
from comicface import train
from comicface import workdir as workdirs

EPOCHS = 'num_epochs'
VALUE_AXES = ('learning_rate', 'model.dropout_rate')  # trials differing only here can stack


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
    raise configuration.ConfigError(f'config.grid names {dotted!r}, which is not a config field.')
  config[leaf] = type(config[leaf])(value) if isinstance(config[leaf], (int, float)) else value


def expand(config: ml_collections.ConfigDict) -> tuple[list[Trial], list[int]]:
  """The trials (the product of the grid's axes) and the epoch counts to read off."""
  grid = axes(config)
  epochs = sorted(int(e) for e in grid.pop(EPOCHS, ())) or list(range(1, config.num_epochs + 1))
  trials = []
  for i, combo in enumerate(itertools.product(*grid.values())):
    values = dict(zip(grid, combo))
    c = ml_collections.ConfigDict(config.to_dict())
    for k, v in values.items():
      _set(c, k, v)
    c.num_epochs = max(epochs)
    c.grid = ml_collections.ConfigDict()
    name = f'{i:03d}_' + '_'.join(f'{k.split(".")[-1]}={v}' for k, v in values.items())
    configuration.validate(c)
    trials.append(Trial(name, values, c))
  return trials, epochs


def _shape_key(trial: Trial) -> str:
  c = ml_collections.ConfigDict(trial.config.to_dict())
  for k in VALUE_AXES:
    if k in trial.values:
      _set(c, k, 0.0)
  return c.to_json(sort_keys=True)


def groups(trials: list[Trial], mode: str) -> list[list[Trial]]:
  """Sequential: one trial a run. Stacked: trials whose parameter shapes agree share a run."""
  if mode == 'sequential':
    return [[t] for t in trials]
  by_shape: dict[str, list[Trial]] = {}
  for t in trials:
    by_shape.setdefault(_shape_key(t), []).append(t)
  return list(by_shape.values())


def resolve_mode(config: ml_collections.ConfigDict) -> str:
  """'auto' stacks where there are several devices, or an accelerator, to fill
  (see bench/grid_time.py: on one CPU device, trial after trial is as fast)."""
  if config.grid_parallel != 'auto':
    return config.grid_parallel
  return 'stacked' if jax.device_count() > 1 or jax.default_backend() != 'cpu' else 'sequential'


def _rank(record: dict) -> tuple[float, float, int]:
  """Best first: higher validation accuracy, then lower loss, then fewer epochs; NaN last."""
  bad = lambda v: not math.isfinite(v)
  return (math.inf if bad(record['val_accuracy']) else -record['val_accuracy'],
          math.inf if bad(record['val_loss']) else record['val_loss'], record['epoch'])


def select(histories: dict[str, list[dict]], epochs: list[int]) -> tuple[str, dict]:
  """(trial name, record) of the best (trial, epoch) over the allowed epoch counts."""
  candidates = [(name, r) for name, h in histories.items() for r in h if r['epoch'] in epochs]
  return min(candidates, key=lambda c: _rank(c[1]))


def run_group(group: list[Trial], workdir: pathlib.Path, mode: str, epochs: list[int]) -> bool:
  """Trains one group of trials (resuming it), then writes each `trial.json`.

  Returns False if preempted (a checkpoint was saved; the rerun resumes the group).
  """
  dirs = [workdir / 'trials' / t.name for t in group]
  if mode == 'sequential':
    workdirs.claim(group[0].config, str(dirs[0]))
    run = train.setup(group[0].config, str(dirs[0]))
  else:
    run_dir = workdir / 'groups' / group[0].name
    run = train.setup(group[0].config, str(run_dir), [t.config for t in group], [t.name for t in group])
  try:
    finished = train.fit(run, [str(d) for d in dirs], stop_on_nonfinite=False)
  finally:
    run.mngr.close()
  if not finished:
    return False
  if jax.process_index() == 0:
    for t, d, history in zip(group, dirs, run.histories):
      d.mkdir(parents=True, exist_ok=True)
      (d / 'trial.json').write_text(json.dumps({'name': t.name, 'values': t.values, 'history': history}))
      best = select({t.name: history}, epochs)[1]
      writer = logs.Writer(str(d), t.config)
      writer.hparams({k.split('.')[-1]: v for k, v in t.values.items()},
                     {'hparam/val_accuracy': best['val_accuracy'], 'hparam/best_epoch': best['epoch']})
      writer.close()
  return True


def _one_dataset(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the grid's own stand-in (generated and built once, in `workdir`) as
  its source when it has no manual_dir, so that every trial and the retrain share it."""
  if config.dataset.manual_dir:
    return config
  input_pipeline.prepare(config, workdir)
  manual_dir, data_dir, _ = input_pipeline.source_dirs(config.dataset, workdir)  # absolute
  shared = ml_collections.ConfigDict(config.to_dict())
  shared.dataset.manual_dir, shared.dataset.data_dir = str(manual_dir), data_dir
  return shared


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Runs the grid of `config` in `workdir`; writes and returns `results.json`."""
  workdirs.check(config, workdir)
  with workdirs.Hold(workdir):
    workdirs.claim(config, workdir)
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  root = pathlib.Path(workdir)
  if (root / 'results.json').exists():
    return json.loads((root / 'results.json').read_text())
  trials, epochs = expand(_one_dataset(config, workdir))
  mode = resolve_mode(config)
  logging.info('Grid: %d trials, epochs %s, %s.', len(trials), epochs, mode)
  for group in groups(trials, mode):
    if all((root / 'trials' / t.name / 'trial.json').exists() for t in group):
      logging.info('Skipping finished trial(s) %s.', [t.name for t in group])
      continue
    if not run_group(group, root, mode, epochs):
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None
  histories = {t.name: json.loads((root / 'trials' / t.name / 'trial.json').read_text())['history']
               for t in trials}
  best_name, best = select(histories, epochs)
  winner = next(t for t in trials if t.name == best_name)
  final = ml_collections.ConfigDict(winner.config.to_dict())
  final.num_epochs = best['epoch']
  final.train_splits = tuple(config.retrain_splits)
  final.test_checkpoint = 'last'
  logging.info('Winner %s at epoch %d (val accuracy %.4f); retraining on %s.', best_name,
               best['epoch'], best['val_accuracy'], '+'.join(final.train_splits))
  final_results = train.train_and_evaluate(final, str(root / 'final'))
  if final_results is None:
    return None
  table = []
  for t in trials:
    r = select({t.name: histories[t.name]}, epochs)[1]
    table.append({'trial': t.name, **t.values, 'best_epoch': r['epoch'],
                  'val_accuracy': r['val_accuracy'], 'val_loss': r['val_loss']})
  results = {key: final_results[key] for key in ('test_accuracy', 'test_loss', 'num_test_examples')}
  results.update(chosen=winner.values, best_epoch=best['epoch'], best_val_accuracy=best['val_accuracy'],
                 best_val_loss=best['val_loss'], winner=best_name, trials=table, grid_parallel=mode,
                 history=histories[best_name], config=config.to_dict())
  builder = input_pipeline.prepare(final, str(root / 'final'))  # built: only checked
  if jax.process_index() == 0:
    (root / 'results.json').write_text(json.dumps(results, indent=2))
    test = input_pipeline.open_split(builder, 'test', final.batch_size, final.dataset.split_scheme)
    probs = np.load(root / 'final' / 'test_predictions.npy')
    report.write(workdir, results, test, probs, table, [k for k in axes(config) if k != EPOCHS])
  return results
