"""What the training loop does besides training, in the spirit of CLU's periodic actions:
each action is called after every block of train steps and after every epoch."""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from absl import logging

from comicface import checkpointing
from comicface import errors
from comicface import logs
from comicface import metrics
from comicface import workdir as workdirs
from comicface.steps import mean_records, Metrics, Record, summarize

if TYPE_CHECKING:
  from comicface.train import Member, Run


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The loss became NaN or Inf."""


class Preempted(Exception):
  """Raised by `StopOnPreemption` once a checkpoint is saved; the loop returns False."""


class Action:
  """Called by `train.fit`; the default is to do nothing."""

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    """After a block of `taken` train steps; `sums` are the epoch's so far."""

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


class ReportProgress(Action):
  """The console: a progress line every `config.log_every_steps`, a line per epoch."""

  def __init__(self, run: Run):
    self.progress = logs.Progress(run.steps_per_epoch * run.config.num_epochs, run.config.batch_size,
                                  run.config.log_every_steps)

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    if self.progress.due(run.step, taken):
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
  since the last (and when the run ends: `train.fit`), with its epoch's record, by which its
  manager keeps its best beside its latest; meanwhile a member's best epoch is held on the
  host (`Run.hold_best`) and written with its next checkpoint."""

  def __init__(self):
    self.last = time.monotonic()

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    if time.monotonic() - self.last >= run.config.checkpoint_seconds:
      run.save()
      self.last = time.monotonic()
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


_PREEMPTED = threading.Event()  # set by SIGTERM; every run of the process sees it
_HANDLING = [0]  # how deep handle_sigterm is entered


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  logging.warning('SIGTERM received: saving a checkpoint at the next step, then exiting.')
  _PREEMPTED.set()


def preempted() -> bool:
  """Whether SIGTERM has asked this process to save and stop."""
  return _PREEMPTED.is_set()


def preempted_within(seconds: float) -> bool:
  """Waits up to `seconds` for SIGTERM's request; whether it came."""
  return _PREEMPTED.wait(seconds)


@contextlib.contextmanager
def handle_sigterm() -> Iterator[None]:
  """While entered, SIGTERM asks every run of the process to save and stop. Entered around a
  whole command (a search, a run); nested entries, and entries in other threads than the
  main one, change nothing, so a request made between two trials is not lost."""
  if threading.current_thread() is not threading.main_thread() or _HANDLING[0]:
    _HANDLING[0] += 1
    try:
      yield
    finally:
      _HANDLING[0] -= 1
    return
  _PREEMPTED.clear()
  previous = signal.signal(signal.SIGTERM, _on_sigterm)
  _HANDLING[0] += 1
  try:
    yield
  finally:
    _HANDLING[0] -= 1
    signal.signal(signal.SIGTERM, previous)


class StopOnPreemption(Action):
  """On SIGTERM (what a preemption sends; see `handle_sigterm`) or Orbax's preemption notice:
  saves a checkpoint at the next step (with the epoch's partial sums, so that the resumed
  epoch's record is exact) and stops the loop (`Preempted`)."""

  def __init__(self, check_nonfinite: bool = True):
    self.check_nonfinite = check_nonfinite

  def _due(self, run: Run) -> bool:
    return preempted() or run.members[0].manager.reached_preemption(run.step)

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    if run.step % run.steps_per_epoch and self._due(run):
      if self.check_nonfinite:
        check_finite(summarize(sums, 'train'), run.step)
      run.save(partial=sums)
      for member in run.members:
        checkpointing.wait(member.manager)
      raise Preempted

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    if run.epoch < run.config.num_epochs and self._due(run):
      run.save(run.unsaved())
      for member in run.members:
        checkpointing.wait(member.manager)
      raise Preempted


class StopOnLostHold(Action):
  """Stops the run (workdir.HoldLostError) once a hold of this process could not write its
  heartbeat: another run may be taking its place."""

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    workdirs.raise_if_hold_lost()


def standard(run: Run, stop_on_nonfinite: bool = True) -> list[Action]:
  """The actions of a training run, in the order they must run after an epoch (the
  finite check before the checkpoint, the preemption check after it). A search's
  trials may diverge alone (`stop_on_nonfinite=False`): their NaN ranks them last."""
  return [ReportProgress(run), *([StopOnNonFinite()] if stop_on_nonfinite else []), WriteTensorBoard(run),
          SaveCheckpoints(), EarlyStopping(), StopOnPreemption(stop_on_nonfinite), StopOnLostHold()]
