"""A hyper-parameter search: train its trials, select on validation, retrain the winner,
test it once, and report. The trials come from `config.grid` (search_space.py).

Trials that differ only in values can be stacked and trained as one vmapped run
(`config.grid_parallel`); runs equal in their static config share compiled steps.
"""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from comicface import actions
from comicface import input_pipeline
from comicface import logs
from comicface import report
from comicface import search_space
from comicface import steps as steps_lib
from comicface import train
from comicface import workdir as workdirs

Trial = search_space.Trial


def resolve_mode(config: ml_collections.ConfigDict) -> str:
  """'auto' stacks where there are several devices, or an accelerator, to fill
  (on one CPU device, trial after trial is as fast: docs/performance.md)."""
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


class SharedSteps:
  """One `Steps` per static config, mesh and stacking: the runs of a search that share
  them compile once."""

  def __init__(self):
    self._steps: dict[tuple, steps_lib.Steps] = {}

  def get(self, config: ml_collections.ConfigDict, task: input_pipeline.Task, trials: int,
          stacked: bool) -> steps_lib.Steps:
    mesh = steps_lib.make_mesh(trials)
    key = (steps_lib.static_config(config), task, mesh, stacked)
    if key not in self._steps:
      self._steps[key] = steps_lib.Steps(key[0], len(task.classes), task.image_shape, mesh, stacked)
    return self._steps[key]


def _trial_dir(root: pathlib.Path, t: Trial) -> pathlib.Path:
  return root / 'trials' / t.name


def run_group(group: list[Trial], root: pathlib.Path, mode: str, epochs: list[int],
              shared: SharedSteps, task: input_pipeline.Task) -> bool:
  """Trains one group of trials (resuming it), then writes each `trial.json`.

  Returns False if preempted (a checkpoint was saved; the rerun resumes the group).
  """
  dirs = [_trial_dir(root, t) for t in group]
  stacked = mode == 'stacked'
  if stacked:
    run_dir = root / 'groups' / group[0].name
  else:
    run_dir = dirs[0]
    workdirs.claim(group[0].config, str(run_dir))
  steps = shared.get(group[0].config, task, len(group), stacked)
  run = train.setup(group[0].config, str(run_dir), [t.config for t in group] if stacked else (),
                    [t.name for t in group] if stacked else (), steps=steps)
  try:
    finished = train.fit(run, actions.standard(run, [str(d) for d in dirs], stop_on_nonfinite=False))
  finally:
    run.manager.close()
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


def train_trials(trials: list[Trial], root: pathlib.Path, mode: str, epochs: list[int],
                 shared: SharedSteps, task: input_pipeline.Task) -> bool:
  """Trains every unfinished trial, group by group; False if preempted."""
  for group in search_space.groups(trials, mode):
    if all((_trial_dir(root, t) / 'trial.json').exists() for t in group):
      logging.info('Skipping finished trial(s) %s.', [t.name for t in group])
      continue
    if not run_group(group, root, mode, epochs, shared, task):
      return False
  return True


def retrain(config: ml_collections.ConfigDict, winner: Trial, record: dict, root: pathlib.Path,
            shared: SharedSteps, task: input_pipeline.Task) -> dict[str, Any] | None:
  """Retrains the winner on `config.retrain_splits` for its best epoch count and tests it,
  in `root/final`; None if preempted."""
  final = ml_collections.ConfigDict(winner.config.to_dict())
  final.num_epochs = record['epoch']
  final.train_splits = tuple(config.retrain_splits)
  final.test_checkpoint = 'last'
  logging.info('Winner %s at epoch %d (val accuracy %.4f); retraining on %s.', winner.name,
               record['epoch'], record['val_accuracy'], '+'.join(final.train_splits))
  return train.train_and_evaluate(final, str(root / 'final'), steps=shared.get(final, task, 1, False))


def write_results(config: ml_collections.ConfigDict, root: pathlib.Path, trials: list[Trial],
                  histories: dict[str, list[dict]], epochs: list[int], winner: Trial, record: dict,
                  final_results: dict[str, Any], mode: str) -> dict[str, Any]:
  """`results.json` and the report of a finished search (process 0 writes them)."""
  table = []
  for t in trials:
    r = select({t.name: histories[t.name]}, epochs)[1]
    table.append({'trial': t.name, **t.values, 'best_epoch': r['epoch'],
                  'val_accuracy': r['val_accuracy'], 'val_loss': r['val_loss']})
  results = {key: final_results[key] for key in ('test_accuracy', 'test_loss', 'num_test_examples')}
  results.update(chosen=winner.values, best_epoch=record['epoch'], best_val_accuracy=record['val_accuracy'],
                 best_val_loss=record['val_loss'], winner=winner.name, trials=table, grid_parallel=mode,
                 history=histories[winner.name], config=config.to_dict())
  if jax.process_index() == 0:
    (root / 'results.json').write_text(json.dumps(results, indent=2))
    final = root / 'final'
    builder = input_pipeline.prepare(workdirs.recorded_config(str(final)), str(final))  # built: only checked
    test = input_pipeline.open_split(builder, 'test', config.batch_size, config.dataset.split_scheme)
    report.write(str(root), results, test, np.load(final / 'test_predictions.npy'), train.read_task(str(final)).classes,
                 table, [k for k in search_space.axes(config) if k != search_space.EPOCHS])
  return results


def _one_dataset(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the search's own stand-in (generated and built once, in `workdir`) as
  its source when it has no manual_dir, so that every trial and the retrain share it."""
  if config.dataset.manual_dir:
    return config
  input_pipeline.prepare(config, workdir)
  manual_dir, data_dir, _ = input_pipeline.source_dirs(config.dataset, workdir)  # absolute
  shared = ml_collections.ConfigDict(config.to_dict())
  shared.dataset.manual_dir, shared.dataset.data_dir = str(manual_dir), data_dir
  return shared


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Runs the search of `config` in `workdir`; writes and returns `results.json`
  (None if preempted: checkpoints were saved, and a rerun resumes)."""
  workdirs.check(config, workdir)
  with workdirs.Hold(workdir):
    workdirs.claim(config, workdir)
    root = pathlib.Path(workdir)
    if (root / 'results.json').exists():
      return json.loads((root / 'results.json').read_text())
    data_config = _one_dataset(config, workdir)
    task = input_pipeline.Task.of(input_pipeline.prepare(data_config, workdir))
    trials, epochs = search_space.expand(data_config)
    mode = resolve_mode(config)
    logging.info('Grid: %d trials, epochs %s, %s.', len(trials), epochs, mode)
    shared = SharedSteps()
    if not train_trials(trials, root, mode, epochs, shared, task):
      return _preempted()
    histories = {t.name: json.loads((_trial_dir(root, t) / 'trial.json').read_text())['history']
                 for t in trials}
    name, record = select(histories, epochs)
    winner = next(t for t in trials if t.name == name)
    final_results = retrain(config, winner, record, root, shared, task)
    if final_results is None:
      return _preempted()
    return write_results(config, root, trials, histories, epochs, winner, record, final_results, mode)


def _preempted() -> None:
  logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
