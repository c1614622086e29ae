"""What a search ends with: the winner retrained (or tested as trained) and tested once,
compared with the runner-up, and `results.json` with the report."""
from __future__ import annotations

import pathlib
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from comicface import checkpointing
from comicface import configuration
from comicface import input_pipeline
from comicface import optimizers
from comicface import report
from comicface import search_space
from comicface import stats
from comicface import train
from comicface import workdir as workdirs
from comicface.search.trials import Search, Trial


def compare(search: Search, winner: Trial, runner_up: Trial) -> dict[str, Any]:
  """McNemar's exact test of the winner against the runner-up, each at its best epoch, on
  the same validation examples (one test per seed)."""
  records = [search.record(t) for t in (winner, runner_up)]
  epochs = [search.best(t)['epoch'] for t in (winner, runner_up)]
  n = records[0]['num_val_examples']
  tests = [stats.paired(*(stats.unpack(m['val_correct'][e - 1], n) for m, e in zip(pair, epochs)))
           for pair in zip(records[0]['members'], records[1]['members'])]
  p = tests[0]['p_value']
  verdict = (f'the search cannot tell {winner.name} from {runner_up.name}: p = {p:.3g} on {n} validation '
             'images (McNemar, exact); either is as good a choice' if p >= 0.05 else
             f'{winner.name} beats {runner_up.name} on validation: p = {p:.3g} on {n} images (McNemar, exact)')
  return {'runner_up': runner_up.name, 'tests': tests, 'p_value': p, 'verdict': verdict}


def retrain_config(trial: ml_collections.ConfigDict, epoch: int, splits: tuple[str, ...]) -> ml_collections.ConfigDict:
  """The config that retrains `trial` on `splits` up to its epoch `epoch`, following the
  trial's learning rate at every step: its schedule spans the trial's own epochs."""
  final = ml_collections.ConfigDict(trial.to_dict())
  if optimizers.scheduled(trial):
    final.schedule_epochs = optimizers.schedule_epochs(trial)
  final.num_epochs = epoch
  final.train_splits = tuple(splits)
  final.test_checkpoint = 'last'
  final.early_stopping.monitor = ''  # the epoch count is chosen: train for it
  configuration.validate(final)
  return final


def final_model(search: Search, winner: Trial, record: dict) -> tuple[dict[str, Any], str] | None:
  """The tested model: the winner retrained on `config.retrain_splits` for its best epoch
  count in `final/` (or, with no retrain splits, its own best checkpoint); its test results
  and folder, relative to the search's root. None if preempted."""
  c, root = search.config, search.root
  if not c.retrain_splits:
    folder = search.members(winner)[0].folder
    run = train.setup(winner.config, str(root), search.members(winner)[:1])
    try:
      manager = run.members[0].manager
      step = record['step'] if record['step'] in manager.all_steps() else manager.best_step()
      if step != record['step']:  # the selected epoch's checkpoint was not kept (an epochs axis, seeds)
        logging.warning('Testing %s at step %d, its best checkpoint kept: the selected step %d was not kept.',
                        winner.name, step, record['step'])
      test_record, split, probs = train.test(run, step)
      epoch = next(r['epoch'] for r in run.members[0].history if r['step'] == step)
    finally:
      run.close()
    if jax.process_index() == 0:
      np.save(pathlib.Path(folder) / 'test_predictions.npy', probs)
    return {**test_record, 'tested_step': step, 'tested_epoch': epoch}, str(pathlib.Path(folder).relative_to(root))
  final = retrain_config(winner.config, record['epoch'], c.retrain_splits)
  folder = root / 'final'
  try:
    workdirs.check(final, str(folder))
  except workdirs.WorkdirConflictError:  # another winner, since the budget was raised
    aside = next(folder.with_name(f'final-{i}') for i in range(1, 1000) if not folder.with_name(f'final-{i}').exists())
    logging.warning('The winner changed: moving the previous retrained winner to %s.', aside)
    if jax.process_index() == 0:
      folder.rename(aside)
  logging.info('Winner %s at epoch %d (val accuracy %.4f); retraining on %s.', winner.name,
               record['epoch'], record['val_accuracy'], '+'.join(final.train_splits))
  results = train.train_and_evaluate(final, str(folder), search.shared.factory(final, search.task))
  return results and ({k: v for k, v in results.items() if k.startswith(('test_', 'num_test_', 'tested_'))},
                       'final')


def budget(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a finished search is rerun for when it changes: its fields of role 'budget'
  (`configuration.ROLES`), the epochs as the most a trial trains. Raising the trials or
  epochs continues the search; other retrain splits retrain the winner."""
  value = lambda f: max(search_space.epochs_to_read(config)) if f == 'num_epochs' else configuration.get(config, f)
  return {('epochs' if f == 'num_epochs' else f): list(v) if isinstance(v, tuple) else v
          for f in configuration.fields(config, 'budget') for v in [value(f)]}


def write_results(search: Search, config: ml_collections.ConfigDict, winner: Trial, record: dict,
                  tested: dict[str, Any], model_folder: str) -> dict[str, Any]:
  """`results.json` and the report of a finished search (process 0 writes them)."""
  histories = search.histories()
  bests = {name: search.best(t) for name, t in search.trials.items()}
  table = []
  for name, t in search.trials.items():
    r, trial_record = bests[name], search.record(t)
    accuracies = [next(h for h in m['history'] if h['epoch'] == r['epoch'])['val_accuracy']
                  for m in trial_record['members']]
    table.append({'trial': name, **t.values, 'best_epoch': r['epoch'], 'val_accuracy': r['val_accuracy'],
                  'val_accuracy_std': float(np.std(accuracies)), 'val_loss': r['val_loss'],
                  'epochs_trained': len(histories[name]), 'stopped_early': trial_record['stopped'],
                  config.best_by: r[config.best_by]})
  ranked = sorted(search.trials.values(), key=lambda t: checkpointing.rank(bests[t.name], config.best_by),
                  reverse=True)
  epochs_spent = sum(len(h) for h in histories.values())
  results = {**tested, 'search': config.search, 'chosen': winner.values, 'best_epoch': record['epoch'],
             'best_val_accuracy': record['val_accuracy'], 'best_val_loss': record['val_loss'],
             'winner': winner.name, 'model_folder': model_folder, 'trials': table, 'rungs': search.rungs,
             'trial_epochs': epochs_spent, 'model_epochs': epochs_spent * config.seeds, 'seeds': config.seeds,
             'comparison': compare(search, ranked[0], ranked[1]) if len(ranked) > 1 else None,
             'grid_parallel': search.mode, 'budget': budget(config), 'history': histories[winner.name],
             'config': config.to_dict()}
  if jax.process_index() == 0:
    root = search.root
    workdirs.write_json(root / 'results.json', results)
    folder = root / model_folder
    builder = input_pipeline.prepare(search.config, str(root))  # built: only checked
    test = input_pipeline.open_split(builder, 'test', config.batch_size, config.dataset.split_scheme)
    report.write(str(root), results, test, np.load(folder / 'test_predictions.npy'), search.task.classes,
                 table, list(search_space.space(config)))
  return results
