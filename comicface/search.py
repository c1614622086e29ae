"""Hyper-parameter searches over `config.grid` (search_space.py): 'grid', 'random',
'halving' (successive halving, Hyperband with brackets; the survivors of a rung go on with
their own parameters and optimizer state) and 'bayesian' (TPE through Optuna's ask-and-tell,
trained a batch of trials at a time); `PLANS` holds each. Trials keep their checkpoints and
history in `trials/NAME/`, so a search resumes, a raised budget continues it, and
independent jobs can share it (`config.shard`). The best (trial, epoch) on validation is
retrained (or tested as trained), tested once, and compared with the runner-up.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import math
import os
import pathlib
import threading
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from comicface import actions
from comicface import checkpointing
from comicface import errors
from comicface import input_pipeline
from comicface import logs
from comicface import models
from comicface import report
from comicface import search_space
from comicface import stats
from comicface import steps as steps_lib
from comicface import train
from comicface import workdir as workdirs

Trial = search_space.Trial
POLL_SECONDS = 2.0  # how often a job looks whether the other jobs' trials are done


class Waiting(Exception):
  """This job's part of the search is done; other jobs' trials are not yet."""


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


def shard_of(config: ml_collections.ConfigDict, env: dict[str, str] | None = None) -> tuple[int, int]:
  """(index, count) of this job among the independent jobs sharing the search's workdir:
  `config.shard` 'i/N'; or with 'auto', the launcher's own variables: a Slurm array
  (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT), a Kubernetes indexed job (JOB_COMPLETION_INDEX,
  with COMICFACE_SHARDS=N), TPU VM workers under `--worker=all` (TPU_WORKER_ID,
  TPU_WORKER_HOSTNAMES), unless the job is itself one multi-process program; else (0, 1)."""
  env = os.environ if env is None else env
  spec = config.shard
  if spec and spec != 'auto':
    index, count = (int(x) for x in spec.split('/'))
  elif spec != 'auto' or jax.process_count() > 1:
    index, count = 0, 1
  elif 'SLURM_ARRAY_TASK_ID' in env and 'SLURM_ARRAY_TASK_COUNT' in env:
    index = int(env['SLURM_ARRAY_TASK_ID']) - int(env.get('SLURM_ARRAY_TASK_MIN', 0))
    count = int(env['SLURM_ARRAY_TASK_COUNT'])
  elif 'JOB_COMPLETION_INDEX' in env and 'COMICFACE_SHARDS' in env:
    index, count = int(env['JOB_COMPLETION_INDEX']), int(env['COMICFACE_SHARDS'])
  elif 'TPU_WORKER_ID' in env and env.get('TPU_WORKER_HOSTNAMES'):
    index, count = int(env['TPU_WORKER_ID']), len(env['TPU_WORKER_HOSTNAMES'].split(','))
  else:
    index, count = 0, 1
  if not 0 <= index < count:
    raise errors.ConfigError(f'This job is shard {index} of {count}, which does not exist: give '
                             '--config.shard=i/N with 0 <= i < N (a Slurm array must count from its first index by 1).')
  return index, count


def assign(groups: list, index: int, count: int, cost: Callable[[Any], float] = lambda g: 1.0) -> list:
  """This job's share of the groups of trials: each group, costliest first, goes to the job
  with the least cost so far (the lowest index among equals), so each group trains in exactly
  one job, the jobs' costs are even, and a job rerun on its index gets the same groups."""
  loads, shares = [0.0] * count, [[] for _ in range(count)]
  for group in sorted(groups, key=lambda g: -cost(g)):  # stable: the plan's order among equals
    job = loads.index(min(loads))
    loads[job] += cost(group)
    shares[job].append(group)
  return sorted(shares[index], key=groups.index)


def device_slots(groups: int, devices: list | None = None) -> list[list]:
  """Disjoint sets of devices for `groups` groups to train side by side: as many sets as
  groups (at most one per device), each of the largest size that divides the device count."""
  devices = devices or jax.devices()
  n = len(devices)
  size = max(k for k in range(1, n + 1) if n % k == 0 and k <= max(1, n // groups))
  return [devices[i:i + size] for i in range(0, n, size)][:groups]


def select(histories: dict[str, list[dict]], epochs: list[int]) -> tuple[str, dict]:
  """(trial name, record) of the best (trial, epoch) by `checkpointing.rank` over the allowed
  epoch counts; where no trial has any of them (stopped early, or a rung below them), over
  the epochs they have."""
  candidates = [(name, r) for name, h in histories.items() for r in h if r['epoch'] in epochs]
  candidates = candidates or [(name, r) for name, h in histories.items() for r in h]
  return max(candidates, key=lambda c: checkpointing.rank(c[1]))  # the first of equals


class SharedSteps:
  """One `Steps` per static config, mesh and stacking: the runs of a search that share
  them compile once."""

  def __init__(self):
    self._steps: dict[tuple, steps_lib.Steps] = {}
    self._lock = threading.Lock()

  def get(self, config: ml_collections.ConfigDict, task: input_pipeline.Task, members: int,
          devices: list | None = None) -> steps_lib.Steps:
    mesh = steps_lib.make_mesh(members, devices)
    key = (steps_lib.static_config(config), task, mesh, members > 1)
    with self._lock:
      if key not in self._steps:
        self._steps[key] = steps_lib.Steps(key[0], len(task.classes), task.image_shape, mesh, members > 1)
      return self._steps[key]


@dataclasses.dataclass
class Search:
  """The trials a search has made, training them, and what they did (`trials/NAME/trial.json`)."""
  config: ml_collections.ConfigDict  # with the search's shared data source
  root: pathlib.Path
  task: input_pipeline.Task
  mode: str
  shard: tuple[int, int] = (0, 1)  # (index, count) of this job among those sharing the search
  shared: SharedSteps = dataclasses.field(default_factory=SharedSteps)
  trials: dict[str, Trial] = dataclasses.field(default_factory=dict)
  rungs: list[dict] = dataclasses.field(default_factory=list)
  flops: dict = dataclasses.field(default_factory=dict)  # per static config, for `cost`

  def cost(self, group: list[Trial]) -> float:
    """What training `group` costs, for sharing trials out evenly: its models' FLOPs per
    image (XLA's estimate of one forward pass), times their seeds."""
    def flops(config):
      key = steps_lib.static_config(config)
      if key not in self.flops:
        model = models.create(key.model.to_dict(), len(self.task.classes), config.dtype)
        x = jax.ShapeDtypeStruct((1, *self.task.image_shape), jnp.uint8)
        variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
        self.flops[key] = float(jax.jit(model.apply).lower(variables, x).cost_analysis()['flops'])
      return self.flops[key]
    return sum(flops(t.config) for t in group) * self.config.seeds

  def folder(self, t: Trial) -> pathlib.Path:
    return self.root / 'trials' / t.name

  def record(self, t: Trial) -> dict:
    path = self.folder(t) / 'trial.json'
    return json.loads(path.read_text()) if path.exists() else {'history': [], 'stopped': False}

  def progress(self, t: Trial) -> int:
    """The step the trial's members have checkpoints at (all of them), 0 if none."""
    steps = [max((int(p.name) for p in pathlib.Path(m.folder, 'checkpoints').glob('*') if p.name.isdigit()),
                 default=0) for m in self.members(t)]
    return min(steps)

  def done(self, t: Trial, epochs: int) -> bool:
    record = self.record(t)
    return record['stopped'] or len(record['history']) >= epochs

  def members(self, t: Trial) -> list[train.Member]:
    seeds = self.config.seeds
    return [train.Member(t.name if seeds == 1 else f'{t.name}/seed_{r}',
                         str(self.folder(t) if seeds == 1 else self.folder(t) / f'seed_{r}'), t.config,
                         init_index=r, trial=t.name) for r in range(seeds)]

  def train(self, trials: list[Trial], epochs: int, last: bool = False) -> None:
    """Trains each of `trials` up to `epochs` epochs; those there already (or stopped) are
    left as they are. With several jobs, this one trains its share (`assign`), then waits
    for the others' trials, except after the `last` request of the plan, where it raises
    Waiting instead. Raises actions.Preempted once a checkpoint is saved."""
    self.trials.update((t.name, t) for t in trials)
    stacking = 'sequential' if self.mode == 'sequential' else 'stacked'
    mine = [t for g in assign(search_space.groups(trials, stacking), *self.shard, cost=self.cost)
            for t in g]  # by the plan alone
    by_start: dict[int, list[Trial]] = {}
    for t in mine:  # a stack trains members at one step
      if not self.done(t, epochs):
        by_start.setdefault(self.progress(t), []).append(t)
    self._train_groups([g for _, starting in sorted(by_start.items())
                        for g in search_space.groups(starting, stacking)], epochs)
    for polls in itertools.count():
      pending = [t.name for t in trials if not self.done(t, epochs)]
      if not pending:
        return
      if last:
        raise Waiting(pending)
      if polls % max(1, int(60 / POLL_SECONDS)) == 0:
        logging.info('Job %d/%d waits for %d trial(s) of the other jobs: %s', *self.shard, len(pending), pending[:5])
      time.sleep(POLL_SECONDS)

  def _train_groups(self, groups: list[list[Trial]], epochs: int) -> None:
    """Trains `groups` one after another on all devices, or, in 'parallel' mode, side by
    side on disjoint sets of devices, one thread per set taking the next group."""
    if self.mode != 'parallel' or len(groups) < 2:
      for group in groups:
        if actions.preempted():  # asked between two groups
          raise actions.Preempted
        self._train_group(group, epochs)
      return
    queue = list(reversed(groups))
    take = threading.Lock()

    def worker(devices):
      while True:
        with take:
          if not queue or actions.preempted():
            return
          group = queue.pop()
        self._train_group(group, epochs, devices)
    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
      for future in [pool.submit(worker, slot) for slot in device_slots(len(groups))]:
        future.result()
    if actions.preempted():
      raise actions.Preempted

  def _train_group(self, group: list[Trial], epochs: int, devices: list | None = None) -> None:
    members = [m for t in group for m in self.members(t)]
    with contextlib.ExitStack() as holds:
      for member in members:  # a trial trains in one job at a time
        holds.enter_context(workdirs.Hold(member.folder))
        workdirs.claim(member.config, member.folder)  # its folder restores on its own (inference.load)
      restack = lambda n: self.shared.get(group[0].config, self.task, n, devices)
      run = train.setup(group[0].config, str(self.root), members, restack(len(members)), restack)
      try:
        finished = train.fit(run, actions.standard(run, stop_on_nonfinite=False), until_epoch=epochs)
      finally:
        run.close()
      if not finished:
        raise actions.Preempted
    if jax.process_index() == 0:
      used = [d.id for d in run.steps.data.mesh.devices.flat]
      for t in group:
        self._write_record(t, [m for m in members if m.trial == t.name], run.validation.split.num_examples, used)

  def _write_record(self, t: Trial, members: list[train.Member], num_val_examples: int, devices: list[int]) -> None:
    history = steps_lib.mean_records([m.history for m in members])
    trained_by = {'job': list(self.shard), 'pid': os.getpid(), 'devices': devices}
    record = {'name': t.name, 'values': t.values, 'history': history, 'stopped': any(m.stopped for m in members),
              'num_val_examples': num_val_examples, 'trained_by': trained_by,
              'members': [{'name': m.name, 'history': m.history, 'val_correct': m.correct} for m in members]}
    folder = self.folder(t)
    workdirs.write_json(folder / 'trial.json', record)
    best = select({t.name: history}, search_space.epochs_to_read(self.config))[1]
    writer = logs.Writer(str(folder), t.config)
    writer.hparams({k.split('.')[-1]: v for k, v in t.values.items()},
                   {'hparam/val_accuracy': best['val_accuracy'], 'hparam/best_epoch': best['epoch']})
    writer.close()

  def histories(self) -> dict[str, list[dict]]:
    return {name: self.record(t)['history'] for name, t in self.trials.items()}

  @property
  def max_epochs(self) -> int:
    """What each trial trains for at most: the largest epoch count to read off."""
    return max(search_space.epochs_to_read(self.config))

  def best(self, t: Trial, up_to: int | None = None) -> dict:
    """The trial's best record over the allowed epochs (up to `up_to`)."""
    history = [r for r in self.record(t)['history'] if up_to is None or r['epoch'] <= up_to]
    return select({t.name: history}, search_space.epochs_to_read(self.config))[1]


def grid(search: Search) -> None:
  search.train(search_space.expand(search.config), search.max_epochs, last=True)


def random(search: Search) -> None:
  search.train(search_space.draws(search.config), search.max_epochs, last=True)


def rung_epochs(max_epochs: int, min_epochs: int, factor: int) -> list[int]:
  """The epochs at which successive halving compares its trials: the largest number of
  rungs K with min_epochs * factor^K <= max_epochs, spaced by `factor` down from max_epochs."""
  k = max(0, math.floor(math.log(max_epochs / min_epochs) / math.log(factor) + 1e-9))
  return [max(1, round(max_epochs / factor ** (k - i))) for i in range(k + 1)]


def halving(search: Search) -> None:
  """Successive halving of the candidates (one bracket), or Hyperband's brackets: bracket
  b starts its n_b draws at the rungs of s = s_max - b."""
  c = search.config
  h = c.halving
  full = rung_epochs(search.max_epochs, h.min_epochs, h.factor)
  for bracket in range(h.brackets):
    s = len(full) - 1 - bracket
    if s < 0:
      break
    rungs = full[bracket:]
    if h.brackets == 1:  # the grid's trials, or draws where the space has ranges
      alive = search_space.draws(c) if search_space.has_ranges(c) else search_space.expand(c)
    else:  # Hyperband: n_s = ceil((s_max + 1) / (s + 1) * factor^s) draws of its own
      n = math.ceil(len(full) / (s + 1) * h.factor ** s)
      alive = [search_space.draw(c, 1000 * (bracket + 1) + i, stream=bracket + 1) for i in range(n)]
    for i, epochs in enumerate(rungs):
      search.train(alive, epochs, last=bracket == h.brackets - 1 and i == len(rungs) - 1)
      ranked = sorted(alive, key=lambda t: checkpointing.rank(search.best(t, epochs)), reverse=True)
      keep = len(ranked) if i == len(rungs) - 1 else max(1, len(ranked) // h.factor)
      search.rungs.append({'bracket': bracket, 'epochs': epochs, 'trials': [t.name for t in ranked],
                           'survivors': [t.name for t in ranked[:keep]]})
      alive = ranked[:keep]


def _optuna():
  try:
    import optuna  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.ConfigError("config.search='bayesian' needs Optuna: pip install 'comicface[search]' "
                             "(or pip install optuna).") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def bayesian(search: Search) -> None:
  """TPE over the space, `config.bayesian_batch` trials a batch. Batch b's sampler is seeded
  with (seed, b) and told every earlier trial's best validation accuracy, so that the same
  config asks the same trials, and a resumed search asks what the first one did."""
  optuna = _optuna()
  c = search.config
  space = search_space.space(c)

  def distribution(v):
    if isinstance(v, search_space.Range):
      if v.kind == 'int_uniform':
        return optuna.distributions.IntDistribution(int(v.low), int(v.high))
      return optuna.distributions.FloatDistribution(v.low, v.high, log=v.kind == 'log_uniform')
    return optuna.distributions.CategoricalDistribution(list(v))
  distributions = {k: distribution(v) for k, v in space.items()}
  asked: list[Trial] = []
  for batch in range(math.ceil(c.num_trials / c.bayesian_batch)):
    sampler = optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([c.seed, batch]).generate_state(1)[0]),
                                         constant_liar=True, n_startup_trials=c.bayesian_batch)
    study = optuna.create_study(direction='maximize', sampler=sampler)
    for t in asked:
      study.add_trial(optuna.trial.create_trial(params=t.values, distributions=distributions,
                                                value=search.best(t)['val_accuracy']))
    batch_trials = [search_space.trial(c, i, study.ask(distributions).params, search.max_epochs)
                    for i in range(batch * c.bayesian_batch, min(c.num_trials, (batch + 1) * c.bayesian_batch))]
    search.train(batch_trials, search.max_epochs, last=len(asked) + len(batch_trials) >= c.num_trials)
    asked += batch_trials


PLANS: dict[str, Callable[[Search], None]] = {'grid': grid, 'random': random, 'halving': halving,
                                              'bayesian': bayesian}


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
    finally:
      run.close()
    if jax.process_index() == 0:
      np.save(pathlib.Path(folder) / 'test_predictions.npy', probs)
    return {**test_record, 'tested_step': step}, str(pathlib.Path(folder).relative_to(root))
  final = ml_collections.ConfigDict(winner.config.to_dict())
  final.num_epochs = record['epoch']
  final.train_splits = tuple(c.retrain_splits)
  final.test_checkpoint = 'last'
  final.early_stopping.monitor = ''  # the epoch count is chosen: train for it
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
  results = train.train_and_evaluate(final, str(folder), steps=search.shared.get(final, search.task, 1))
  return results and ({**{k: results[k] for k in ('test_accuracy', 'test_loss', 'num_test_examples')},
                       'tested_step': results['best_step']}, 'final')


def budget(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a finished search is rerun for when it changes: raising the trials or epochs
  continues the search; other retrain splits retrain the winner."""
  return {'num_trials': config.num_trials, 'epochs': max(search_space.epochs_to_read(config)),
          'retrain_splits': list(config.retrain_splits)}


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
                  'epochs_trained': len(histories[name]), 'stopped_early': trial_record['stopped']})
  ranked = sorted(search.trials.values(), key=lambda t: checkpointing.rank(bests[t.name]), reverse=True)
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
  (None if preempted: checkpoints were saved, and a rerun resumes; or where other jobs
  sharing the search have trials left)."""
  with actions.handle_sigterm():
    return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  workdirs.claim(config, workdir)
  root = pathlib.Path(workdir)
  if (root / 'results.json').exists():
    results = json.loads((root / 'results.json').read_text())
    if results.get('budget') == budget(config):
      return results
    logging.info('%s: the budget was raised from %s to %s; continuing the search.', workdir,
                 results.get('budget'), budget(config))
  data_config = _one_dataset(config, workdir)
  task = input_pipeline.Task.of(input_pipeline.prepare(data_config, workdir))
  search = Search(data_config, root, task, resolve_mode(config), shard_of(config))
  logging.info('Search %s over %s, epochs %s, %s, job %d of %d.', config.search, list(search_space.axes(config)),
               search_space.epochs_to_read(config), search.mode, search.shard[0] + 1, search.shard[1])
  try:
    PLANS[config.search](search)
    name, record = select(search.histories(), search_space.epochs_to_read(config))
    return _finish(search, config, search.trials[name], record)
  except actions.Preempted:
    logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
  except Waiting as pending:
    logging.info('Job %d/%d has trained its trials; %d of the other jobs\' are not done yet %s. The last job '
                 'to finish (or this command without a shard) selects, retrains and tests the winner.',
                 search.shard[0] + 1, search.shard[1], len(pending.args[0]), pending.args[0][:5])
  return None


def _finish(search: Search, config: ml_collections.ConfigDict, winner: Trial, record: dict) -> dict[str, Any] | None:
  """Retrains and tests the winner and writes the results, once: in the job that holds the
  workdir for it (another finishing job is told so, and stops)."""
  root = search.root
  try:
    hold = workdirs.Hold(str(root)).__enter__()
  except workdirs.WorkdirBusyError as busy:
    logging.info('Another job is retraining and testing the winner: %s', busy)
    return None
  try:
    done = root / 'results.json'
    if done.exists() and json.loads(done.read_text()).get('budget') == budget(config):
      return json.loads(done.read_text())  # another job finished it meanwhile
    tested = final_model(search, winner, record)
    return tested and write_results(search, config, winner, record, *tested)
  finally:
    hold.__exit__(None, None, None)
