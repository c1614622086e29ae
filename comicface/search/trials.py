"""A search's trials: training them (in stacks, on sub-meshes, shared with other jobs) and
what they did (`trials/NAME/trial.json`)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
import threading

import jax
import ml_collections

from comicface import actions
from comicface import preemption
from comicface import checkpointing
from comicface import input_pipeline
from comicface import logs
from comicface import models
from comicface import search_space
from comicface import steps as steps_lib
from comicface import train
from comicface import workdir as workdirs
from comicface.search import jobs

Trial = search_space.Trial


def select(histories: dict[str, list[dict]], epochs: list[int], by: str) -> tuple[str, dict]:
  """(trial name, record) of the best (trial, epoch) by `checkpointing.rank` (of `by`) over
  the allowed epoch counts; where no trial has any of them (stopped early, or a rung below
  them), over the epochs they have."""
  candidates = [(name, r) for name, h in histories.items() for r in h if r['epoch'] in epochs]
  candidates = candidates or [(name, r) for name, h in histories.items() for r in h]
  return max(candidates, key=lambda c: checkpointing.rank(c[1], by))  # the first of equals


def device_slots(groups: int, devices: list | None = None) -> list[list]:
  """Disjoint sets of devices for `groups` groups to train side by side: as many sets as
  groups (at most one per device), each of the largest size that divides the device count."""
  devices = devices or jax.devices()
  n = len(devices)
  size = max(k for k in range(1, n + 1) if n % k == 0 and k <= max(1, n // groups))
  return [devices[i:i + size] for i in range(0, n, size)][:groups]


class SharedSteps:
  """One `Steps` per static config, mesh and stacking: the runs of a search that share
  them compile once."""

  def __init__(self):
    self._steps: dict[tuple, steps_lib.Steps] = {}
    self._lock = threading.Lock()

  def get(self, config: ml_collections.ConfigDict, task: input_pipeline.Task, members: int,
          steps_per_epoch: int, devices: list | None = None) -> steps_lib.Steps:
    mesh = steps_lib.make_mesh(members, devices)
    key = (steps_lib.static_config(config), task, mesh, members > 1, steps_per_epoch)
    with self._lock:
      if key not in self._steps:
        self._steps[key] = steps_lib.Steps(key[0], len(task.classes), task.image_shape, mesh, members > 1,
                                           steps_per_epoch=steps_per_epoch)
      return self._steps[key]

  def factory(self, config: ml_collections.ConfigDict, task: input_pipeline.Task,
              devices: list | None = None) -> train.StepsFactory:
    return lambda n, per_epoch: self.get(config, task, n, per_epoch, devices)


@dataclasses.dataclass
class Search:
  """The trials a search has made, training them, and what they did."""
  config: ml_collections.ConfigDict  # with the search's shared data source
  root: pathlib.Path
  task: input_pipeline.Task
  mode: str
  shard: tuple[int, int] = (0, 1)  # (index, count) of this job among those sharing the search
  shared: SharedSteps = dataclasses.field(default_factory=SharedSteps)
  trials: dict[str, Trial] = dataclasses.field(default_factory=dict)
  rungs: list[dict] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self.plan = jobs.Plan(self.root, self.shard, self.config)

  def cost(self, group: list[Trial]) -> float:
    """What training `group` costs, for sharing trials out evenly: its models' FLOPs per
    image (`models.cost`, from the config alone), times their seeds."""
    return sum(models.cost(t.config.model.to_dict(), len(self.task.classes), self.task.image_shape,
                           t.config.dtype).flops for t in group) * self.config.seeds

  def folder(self, t: Trial) -> pathlib.Path:
    return self.root / 'trials' / t.name

  def record(self, t: Trial) -> dict:
    path = self.folder(t) / 'trial.json'
    return json.loads(path.read_text()) if path.exists() else {'history': [], 'stopped': False}

  def done(self, t: Trial, epochs: int) -> bool:
    record = self.record(t)
    return record['stopped'] or len(record['history']) >= epochs

  def members(self, t: Trial) -> list[train.Member]:
    seeds = self.config.seeds
    return [train.Member(t.name if seeds == 1 else f'{t.name}/seed_{r}',
                         str(self.folder(t) if seeds == 1 else self.folder(t) / f'seed_{r}'), t.config,
                         init_index=r, trial=t.name) for r in range(seeds)]

  def train(self, trials: list[Trial], epochs: int, request: str) -> None:
    """Trains each of `trials` up to `epochs` epochs (those there already, or stopped, are
    left as they are) and returns when all are: this job's groups of the plan's `request`
    first, then any other group that no job holds (taken over, from its checkpoints); then
    it waits for the groups that live jobs hold (jobs.py). Raises preemption.Preempted once a
    checkpoint is saved, or on SIGTERM while waiting."""
    self.trials.update((t.name, t) for t in trials)
    stacking = 'sequential' if self.mode == 'sequential' else 'stacked'
    groups = search_space.groups(trials, stacking)
    owners = self.plan.owners(request, groups, self.cost)
    ordered = sorted(groups, key=lambda g: owners[g[0].name] != self.shard[0])  # this job's first
    waiter = jobs.Waiter(self.shard)
    while True:
      pending = [[t for t in g if not self.done(t, epochs)] for g in ordered]
      pending = [g for g in pending if g]
      if not pending:
        return
      if not self._train_groups(pending, epochs):  # a group resumes from its members' common step
        waiter.pause(lambda: [f'{g[0].name} ({jobs.holder(str(self.folder(g[0])))})' for g in pending])

  def _train_groups(self, groups: list[list[Trial]], epochs: int) -> bool:
    """Trains those of `groups` that no other job holds, one after another on all devices,
    or, in 'parallel' mode, side by side on disjoint sets of devices (a thread per set
    taking the next group); whether it trained any."""
    trained = []
    if self.mode != 'parallel' or len(groups) < 2:
      for group in groups:
        if actions.preempted_anywhere():  # asked between two groups
          raise preemption.Preempted
        trained.append(self._train_group(group, epochs))
      return any(trained)
    queue = list(reversed(groups))
    take = threading.Lock()

    def worker(devices):
      while True:
        with take:
          if not queue or preemption.preempted():
            return
          group = queue.pop()
        trained.append(self._train_group(group, epochs, devices))
    with concurrent.futures.ThreadPoolExecutor(len(groups)) as pool:
      for future in [pool.submit(worker, slot) for slot in device_slots(len(groups))]:
        future.result()
    if preemption.preempted():
      raise preemption.Preempted
    return any(trained)

  def _train_group(self, group: list[Trial], epochs: int, devices: list | None = None) -> bool:
    """Trains `group` as one run, holding its members' folders; False if another job holds one."""
    members = [m for t in group for m in self.members(t)]
    with contextlib.ExitStack() as holds:
      try:
        for member in members:
          holds.enter_context(workdirs.Hold(member.folder))
      except workdirs.WorkdirBusyError:
        return False
      if any(self.done(t, epochs) for t in group):  # trained meanwhile by the job that held it
        return True
      for member in members:
        workdirs.claim(member.config, member.folder)  # its folder restores on its own (inference.load)
      run = train.setup(group[0].config, str(self.root), members, self.shared.factory(group[0].config, self.task,
                                                                                      devices))
      try:
        finished = train.fit(run, actions.standard(run, stop_on_nonfinite=False), until_epoch=epochs)
      finally:
        run.close()
      if not finished:
        raise preemption.Preempted
      if jax.process_index() == 0:
        used = [d.id for d in run.steps.data.mesh.devices.flat]
        for t in group:
          self._write_record(t, [m for m in members if m.trial == t.name], run.validation.split.num_examples, used)
    return True

  def _write_record(self, t: Trial, members: list[train.Member], num_val_examples: int, devices: list[int]) -> None:
    history = steps_lib.mean_records([m.history for m in members])
    trained_by = {'job': list(self.shard), 'pid': os.getpid(), 'devices': devices}
    record = {'name': t.name, 'values': t.values, 'history': history, 'stopped': any(m.stopped for m in members),
              'num_val_examples': num_val_examples, 'trained_by': trained_by,
              'members': [{'name': m.name, 'history': m.history, 'val_correct': m.correct} for m in members]}
    folder = self.folder(t)
    workdirs.write_json(folder / 'trial.json', record)
    best = select({t.name: history}, search_space.epochs_to_read(self.config), self.config.best_by)[1]
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
    return select({t.name: history}, search_space.epochs_to_read(self.config), self.config.best_by)[1]
