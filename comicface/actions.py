"""What the training loop does besides training, in the spirit of CLU's periodic actions:
each action is called after every block of train steps and after every epoch.

On several processes every choice that changes what they run next is taken by all at the
same step. A choice made from the records (early stopping, a non-finite loss) is the same
everywhere by construction: every process holds the same replicated values. A choice made
from a process's own state (its clock says a checkpoint is due, SIGTERM reached it, its hold
on the workdir was lost) is a request, and `Decide` agrees the requests of all processes
at the points where the loop waits for the devices anyway: the log steps and each epoch's end.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from comicface import checkpointing
from comicface import errors
from comicface import logs
from comicface import metrics
from comicface import workdir as workdirs
from comicface.preemption import Preempted, preempted, request_stop
from comicface.steps import mean_records, Metrics, Record, summarize

if TYPE_CHECKING:
  from comicface.train import Member, Run


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The loss became NaN or Inf."""


class Action:
  """Called by `train.fit`; the default is to do nothing."""

  def after_steps(self, run: Run, sums: Metrics, at_log: bool) -> None:
    """After a block of train steps; `sums` are the epoch's so far; `at_log`: the block
    ends at a log step (`Run.log_due`), where the loop may wait for the devices."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    """After an epoch, with the record of each member (also appended to its history)."""

  def close(self) -> None:
    """When the loop ends, however it ends."""


def check_finite(records: Sequence[Record], step: int) -> None:
  """Raises NonFiniteLossError where a loss of `records` is NaN or infinite."""
  for record in records:
    for k, v in record.items():
      if k.endswith('_loss') and not math.isfinite(v):
        raise NonFiniteLossError(f'{k} is {v} at step {step}; no checkpoint was written for it. '
                                 'Lower config.learning_rate, or check the data.')


@dataclasses.dataclass(frozen=True)
class Requests:
  """What some process asks of all of them, taken by all at the same step."""
  checkpoint: bool = False  # its clock says a checkpoint is due (config.checkpoint_seconds)
  preempt: bool = False     # SIGTERM, or the preemption notice, reached it: save and stop
  hold_lost: bool = False   # its hold on a workdir could not renew its heartbeat: stop


def agree(local: Requests) -> Requests:
  """The requests of every process, each made where any process made it. On several
  processes a collective (all must call it at the same step); on one, `local` itself."""
  if jax.process_count() == 1:
    return local
  flags = np.asarray(dataclasses.astuple(local), np.int32)
  every = np.asarray(multihost_utils.process_allgather(flags)).reshape(-1, flags.size)
  agreed = Requests(*(bool(x) for x in every.any(0)))
  if agreed != local:
    logging.info('Process %d takes what another process asked: %s.', jax.process_index(), agreed)
  return agreed


class Decide(Action):
  """Agrees every process's requests (`agree`) at each log step inside an epoch and at
  each epoch's end (the only point where a checkpoint is asked for), into `Run.requests`,
  which the actions after it act on; between those points `Run.requests` asks for
  nothing. Its clock restarts at each agreed checkpoint."""

  def __init__(self):
    self.last_checkpoint = time.monotonic()

  def _decide(self, run: Run, epoch_end: bool) -> None:
    due = epoch_end and time.monotonic() - self.last_checkpoint >= run.config.checkpoint_seconds
    run.requests = agree(Requests(checkpoint=due, preempt=preempted(), hold_lost=bool(workdirs.hold_lost())))
    if run.requests.checkpoint:
      self.last_checkpoint = time.monotonic()

  def after_steps(self, run: Run, sums: Metrics, at_log: bool) -> None:
    if run.members[0].manager.reached_preemption(run.step):  # Orbax's notice: already agreed by JAX
      request_stop()
    run.requests = Requests()
    if at_log and run.step % run.steps_per_epoch:  # an epoch's end decides in after_epoch
      self._decide(run, epoch_end=False)

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    self._decide(run, epoch_end=True)


class ReportProgress(Action):
  """The console: a progress line at each log step (`Run.log_due`), a line per epoch."""

  def __init__(self, run: Run):
    self.progress = logs.Progress(run.steps_per_epoch * run.config.num_epochs, run.config.batch_size)

  def after_steps(self, run: Run, sums: Metrics, at_log: bool) -> None:
    if at_log:
      self.progress.log(run.step, run.epoch + 1, run.config.num_epochs, summarize(sums, 'train'))

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    logs.log_epoch(run.trial_names, records)


class StopOnNonFinite(Action):
  """Stops the run with NonFiniteLossError before a non-finite epoch is checkpointed."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    check_finite(records, run.step)


class WriteTensorBoard(Action):
  """Each member's epoch records as TensorBoard scalars, in its folder."""

  def __init__(self, run: Run):
    self.writers = {m.name: logs.Writer(m.folder, m.config) for m in run.members}

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    for member, record in zip(run.members, records):
      self.writers[member.name].scalars(run.step, record)

  def close(self) -> None:
    for writer in self.writers.values():
      writer.close()


class SaveCheckpoints(Action):
  """A checkpoint of every member at the first epoch's end after `config.checkpoint_seconds`
  since the last (as agreed by `Decide`; and when the run ends: `train.fit`), with its
  epoch's record, by which its manager keeps its best beside its latest; meanwhile a
  member's best epoch is held on the host (`Run.hold_best`) and written with its next
  checkpoint."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    if run.requests.checkpoint:
      run.save()
    else:
      run.hold_best()


def stops_early(rule: Any, history: Sequence[Record]) -> bool:
  """Whether Keras' EarlyStopping rule stops a run after `history` (its epochs so far).

  `rule` holds monitor ('' = never stop, 'val_loss', 'val_accuracy', ...), mode ('min',
  'max', or 'auto': max for accuracies, min otherwise), patience, min_delta and
  start_from_epoch, with Keras' meanings: from epoch index start_from_epoch on, an epoch
  improves if it beats the best by more than min_delta; after `patience` epochs without
  improvement (and never at the first epoch), the run stops.
  """
  if not rule.monitor:
    return False
  maximize = rule.mode == 'max' or (rule.mode == 'auto' and metrics.maximize(rule.monitor))
  best, wait = None, 0
  for epoch, record in enumerate(history):
    value = record[rule.monitor]
    if epoch < rule.start_from_epoch:
      continue
    wait += 1
    improved = best is None or (value - rule.min_delta > best if maximize else value + rule.min_delta < best)
    if improved:
      best, wait = value, 0
    elif wait >= rule.patience and epoch > 0:
      return True
  return False


def mark_stopped(members: Sequence[Member]) -> None:
  """Marks the members of every trial that `stops_early` on its history (the mean over
  its seeds: they stop together)."""
  trials: dict[str, list[Member]] = {}
  for member in members:
    trials.setdefault(member.trial, []).append(member)
  for name, seeds in trials.items():
    if not seeds[0].stopped and stops_early(seeds[0].config.early_stopping, mean_records([m.history for m in seeds])):
      logging.info('Early stopping %s after epoch %d (%s).', name or 'the run', len(seeds[0].history),
                   seeds[0].config.early_stopping.monitor)
      for member in seeds:
        member.stopped = True


class EarlyStopping(Action):
  """Marks the members that stop early after an epoch (`mark_stopped`); `train.fit` then
  drops them from the stack (their best checkpoint is the one tested)."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    mark_stopped(run.members)


def preempted_anywhere() -> bool:
  """Whether SIGTERM has reached any process (`agree`: all must ask at the same point)."""
  return agree(Requests(preempt=preempted())).preempt


class StopOnPreemption(Action):
  """On SIGTERM to any process (what a preemption sends; see `handle_sigterm`) or Orbax's
  preemption notice, as agreed by `Decide`: saves a checkpoint (with the epoch's partial
  sums, so that the resumed epoch's record is exact) and stops the loop (`Preempted`)."""

  def __init__(self, check_nonfinite: bool = True):
    self.check_nonfinite = check_nonfinite

  def after_steps(self, run: Run, sums: Metrics, at_log: bool) -> None:
    if run.requests.preempt:
      if self.check_nonfinite:
        check_finite(summarize(sums, 'train'), run.step)
      run.save(partial=sums)
      for member in run.members:
        checkpointing.wait(member.manager)
      raise Preempted

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    if run.epoch < run.config.num_epochs and run.requests.preempt:
      run.save(run.unsaved())
      for member in run.members:
        checkpointing.wait(member.manager)
      raise Preempted


class StopOnLostHold(Action):
  """Stops the run (workdir.HoldLostError) once a hold could not write its heartbeat
  (another run may be taking its place), as agreed by `Decide`."""

  def after_steps(self, run: Run, sums: Metrics, at_log: bool) -> None:
    if run.requests.hold_lost:
      workdirs.raise_if_hold_lost(lost=True)

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    self.after_steps(run, {}, True)


def standard(run: Run, stop_on_nonfinite: bool = True) -> list[Action]:
  """The actions of a training run, in the order they must run after an epoch (the
  requests agreed first, the finite check before the checkpoint, the preemption check after it). A search's
  trials may diverge alone (`stop_on_nonfinite=False`): their NaN ranks them last."""
  return [Decide(), ReportProgress(run), *([StopOnNonFinite()] if stop_on_nonfinite else []),
          WriteTensorBoard(run), SaveCheckpoints(), EarlyStopping(), StopOnPreemption(stop_on_nonfinite),
          StopOnLostHold()]
