"""Independent jobs sharing a search's workdir: which job is this (`shard_of`), which job
trains which trials (`assign`, fixed for all jobs by the `Plan` in `DIR/plan.json`), and
how a job waits for the others' trials (`Waiter`).

Every trial trains in one job at a time: the job holds the trial's folder
(`workdir.Hold`) while it trains it. A job trains the trials the plan gives it first,
then takes over any other trial nobody holds (its job not yet there, or dead: its hold
released, or its heartbeat stale), continuing it from its checkpoints; it waits only for
trials that a live job holds. So a search ends with every trial trained once even if a
job dies and is never rerun.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections

from comicface import configuration
from comicface import preemption
from comicface import errors
from comicface import workdir as workdirs

POLL_SECONDS = 2.0  # how often a waiting job looks at the trials it waits for
LOG_SECONDS = 60.0  # and how often it says what they are


class PlanMismatchError(errors.UserError, RuntimeError):
  """A job's count or config differs from the plan of the search's workdir."""


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


def describe(shard: tuple[int, int]) -> str:
  return f'job {shard[0] + 1} of {shard[1]}'


class Plan:
  """The search's plan, `DIR/plan.json`: the job count, the config it is for (its identity
  fields), and for each request of the search (a grid, a rung, a batch of TPE) each trial's
  job, from a cost computed from the config alone (`models.cost`). The first job writes
  it; every job checks it, refusing another job count or config, and follows each
  request's assignment as written."""

  def __init__(self, root: pathlib.Path, shard: tuple[int, int], config: ml_collections.ConfigDict):
    self.path, self.shard = root / 'plan.json', shard
    self.config = workdirs.identity(config)

  def _read(self) -> dict | None:
    return json.loads(self.path.read_text()) if self.path.exists() else None

  def check(self) -> None:
    """Writes the plan, or checks this job against the one written."""
    with workdirs.exclusive(self.path.with_name('.plan.lock')):
      plan = self._read()
      if plan is None:
        if jax.process_index() == 0:
          workdirs.write_json(self.path, {'jobs': self.shard[1], 'config': self.config, 'requests': {}})
        return
    if plan['jobs'] != self.shard[1]:
      raise PlanMismatchError(
          f'{self.path.parent} holds a search planned for {plan["jobs"]} job(s) ({self.path}), and this job is '
          f'one of {self.shard[1]}. Start every job of it with --config.shard=i/{plan["jobs"]} (0 <= i < '
          f'{plan["jobs"]}), or use a new --workdir for another job count.')
    planned = configuration.identity_now(plan['config'])
    diff = sorted(k for k in self.config if planned.get(k) != self.config[k])
    if diff:
      raise PlanMismatchError(f'{self.path.parent} holds a search planned for another config (it differs in '
                              f'{", ".join(diff)}): use the config that made it, or a new --workdir.')

  def owners(self, request: str, groups: list[list], cost: Callable[[list], float]) -> dict[str, int]:
    """Each trial's job in `request` (trial name -> job index): as the plan has it, and for
    trials it lacks (the first job there, or a raised budget), `assign`ed and written."""
    with workdirs.exclusive(self.path.with_name('.plan.lock')):
      plan = self._read() or {'jobs': self.shard[1], 'config': self.config, 'requests': {}}
      known = plan['requests'].get(request, {})
      count = plan['jobs']
      fresh = {t.name: job for job in range(count) for g in assign(groups, job, count, cost) for t in g}
      owners = {**fresh, **known}
      if owners != known and jax.process_index() == 0:
        plan['requests'][request] = owners
        workdirs.write_json(self.path, plan)
    return owners


def holder(folder: str) -> str:
  """Who holds a trial's folder, as a waiting job reports it."""
  hold = pathlib.Path(folder) / workdirs.HOLD_FILE
  try:
    who = json.loads(hold.read_text() or '{}')
    age = workdirs.file_system_now(hold.parent) - hold.stat().st_mtime
  except (OSError, ValueError):
    return 'not started'
  return f'held by pid {who["pid"]} on {who["host"]}, heartbeat {age:.0f} s ago' if who else 'not held'


class Waiter:
  """Paces a job's wait for trials that other jobs hold: a look every POLL_SECONDS, a line
  every LOG_SECONDS naming what it waits for. SIGTERM ends the wait within a poll
  (preemption.Preempted), as does a hold of this job that lost its heartbeat."""

  def __init__(self, shard: tuple[int, int]):
    self.job, self.said = describe(shard), -math.inf

  def pause(self, waiting_for: Callable[[], list[str]]) -> None:
    workdirs.raise_if_hold_lost()
    if time.monotonic() - self.said >= LOG_SECONDS:
      what = waiting_for()
      logging.info('%s waits for %d trial(s) of other jobs: %s', self.job.capitalize(), len(what),
                   '; '.join(what[:5]))
      self.said = time.monotonic()
    if preemption.preempted_within(POLL_SECONDS):
      raise preemption.Preempted
