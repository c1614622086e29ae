"""Hyper-parameter searches over `config.grid` (search_space.py): 'grid', 'random',
'halving' (successive halving, Hyperband with brackets; the survivors of a rung go on with
their own parameters and optimizer state) and 'bayesian' (TPE through Optuna's ask-and-tell,
a batch of trials at a time).

    plans.py    which trials each search trains, for how many epochs (`PLANS`)
    trials.py   training them (stacks, sub-meshes) and what they did (`trials/NAME/trial.json`)
    jobs.py     independent jobs sharing the workdir: the plan, take-overs, waits
    results.py  the winner retrained and tested, compared with the runner-up; results.json

Trials keep their checkpoints and history in `trials/NAME/`, so a search resumes, a raised
budget continues it, and jobs share it. The best (trial, epoch) on validation is retrained
(or tested as trained), tested once, and compared with the runner-up.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

from absl import logging
import jax
import ml_collections

from comicface import preemption
from comicface import input_pipeline
from comicface import search_space
from comicface import workdir as workdirs
from comicface.search import jobs
from comicface.search import plans
from comicface.search import results
from comicface.search.trials import Search, Trial, select


def resolve_mode(config: ml_collections.ConfigDict) -> str:
  """How trials share the devices. 'auto': one after another on one CPU device (there,
  trial after trial is as fast: docs/performance.md); as stacks on one accelerator;
  and with several devices, groups of stacks side by side on disjoint sub-meshes
  ('parallel'; one process only)."""
  if config.grid_parallel != 'auto':
    return config.grid_parallel
  if jax.device_count() > 1:
    return 'parallel' if jax.process_count() == 1 else 'stacked'
  return 'stacked' if jax.default_backend() != 'cpu' else 'sequential'


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
  """Runs the search of `config` in `workdir`; writes and returns `results.json` (None if
  preempted: checkpoints were saved, and a rerun resumes). Every value of the config, its
  grid's included, is checked before anything is written. Jobs sharing the workdir each
  return once the search is done (the first to get there selects, retrains and tests)."""
  search_space.validate(config)
  if config.search == 'bayesian':
    plans.load_optuna()
  with preemption.handle_sigterm():
    try:
      return _run(config, workdir)
    except preemption.Preempted:
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None


def _finished(root: pathlib.Path, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The search's results, if it has them for this budget."""
  path = root / 'results.json'
  done = json.loads(path.read_text()) if path.exists() else None
  return done if done and done.get('budget') == results.budget(config) else None


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  shard = jobs.shard_of(config)
  root = pathlib.Path(workdir)
  workdirs.check(config, workdir)  # a workdir of another config, or...
  jobs.Plan(root, shard, config).check()  # ...of another job count, is refused before anything is written
  workdirs.claim(config, workdir)
  done = _finished(root, config)
  if done:
    return done
  if (root / 'results.json').exists():
    logging.info('%s: the budget was raised to %s; continuing the search.', root, results.budget(config))
  data_config = _one_dataset(config, workdir)
  task = input_pipeline.Task.of(input_pipeline.prepare(data_config, workdir))
  search = Search(data_config, root, task, resolve_mode(config), shard)
  logging.info('Search %s over %s, epochs %s, %s, %s.', config.search, list(search_space.axes(config)),
               search_space.epochs_to_read(config), search.mode, jobs.describe(shard))
  plans.PLANS[config.search](search)
  name, record = select(search.histories(), search_space.epochs_to_read(config), config.best_by)
  return _finish(search, config, search.trials[name], record)


def _finish(search: Search, config: ml_collections.ConfigDict, winner: Trial, record: dict) -> dict[str, Any] | None:
  """Retrains and tests the winner and writes the results, once: in the first job to hold
  the workdir for it. The others wait for the hold (and take over from a finishing job
  that died), then find the results."""
  waiter = jobs.Waiter(search.shard)
  while True:
    done = _finished(search.root, config)
    if done:
      return done
    try:
      hold = workdirs.Hold(str(search.root)).__enter__()
    except workdirs.WorkdirBusyError:
      waiter.pause(lambda: [f'the winner retrained and tested ({jobs.holder(str(search.root))})'])
      continue
    try:
      done = _finished(search.root, config)
      if done:
        return done
      tested = results.final_model(search, winner, record)
      return tested and results.write_results(search, config, winner, record, *tested)
    finally:
      hold.__exit__(None, None, None)
