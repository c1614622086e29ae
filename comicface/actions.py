"""What the training loop does besides training, in the spirit of CLU's periodic actions:
each action is called after every block of train steps and after every epoch."""
from __future__ import annotations

import math
import signal
from typing import TYPE_CHECKING, Sequence

from absl import logging

from comicface import checkpointing
from comicface import errors
from comicface import logs
from comicface.steps import Metrics, Record, summarize

if TYPE_CHECKING:
  from comicface.train import Run


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The loss became NaN or Inf."""


class Preempted(Exception):
  """Raised by `StopOnPreemption` once a checkpoint is saved; the loop returns False."""


class Action:
  """Called by `train.fit`; the default is to do nothing."""

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    """After a block of `taken` train steps; `sums` are the epoch's so far."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    """After an epoch, with its record per trial (also appended to `run.histories`)."""

  def close(self) -> None:
    """When the loop ends, however it ends."""


def check_finite(records: Sequence[Record], step: int) -> None:
  for record in records:
    for k, v in record.items():
      if isinstance(v, float) and not math.isfinite(v):
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
  """Each trial's epoch records as TensorBoard scalars, in `logdirs` (one per trial)."""

  def __init__(self, run: Run, logdirs: Sequence[str]):
    if len(logdirs) != len(run.trial_names):
      raise ValueError(f'{len(logdirs)} TensorBoard folders for {len(run.trial_names)} trials')
    self.writers = [logs.Writer(d, run.config) for d in logdirs]

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    for writer, record in zip(self.writers, records):
      writer.scalars(run.step, record)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


class SaveCheckpoints(Action):
  """A checkpoint after every epoch; a single run's carries its validation metrics, so
  that the manager keeps the best beside the latest."""

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    best = records[0] if len(records) == 1 else None
    run.save(metrics=best and {'val_accuracy': best['val_accuracy'], 'val_loss': best['val_loss'],
                               'epoch': best['epoch']})


class StopOnPreemption(Action):
  """On SIGTERM (what a preemption sends) or Orbax's preemption notice: saves a checkpoint
  at the next step (with the epoch's partial sums, so that the resumed epoch's record is
  exact) and stops the loop (`Preempted`)."""

  def __init__(self, check_nonfinite: bool = True):
    self.requested = False
    self.check_nonfinite = check_nonfinite
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the next step, then exiting.')
    self.requested = True

  def _due(self, run: Run) -> bool:
    return self.requested or run.manager.reached_preemption(run.step)

  def after_steps(self, run: Run, sums: Metrics, taken: int) -> None:
    if run.step % run.steps_per_epoch and self._due(run):
      if self.check_nonfinite:
        check_finite(summarize(sums, 'train'), run.step)
      run.save(partial=sums)
      checkpointing.wait(run.manager)
      raise Preempted

  def after_epoch(self, run: Run, records: list[Record]) -> None:
    if run.epoch < run.config.num_epochs and self._due(run):  # the epoch's checkpoint is saved
      checkpointing.wait(run.manager)
      raise Preempted

  def close(self) -> None:
    signal.signal(signal.SIGTERM, self._previous)


def standard(run: Run, logdirs: Sequence[str], stop_on_nonfinite: bool = True) -> list[Action]:
  """The actions of a training run, in the order they must run after an epoch (the
  finite check before the checkpoint, the preemption check after it). A grid's stacked
  trials may diverge alone (`stop_on_nonfinite=False`): their NaN ranks them last."""
  return [ReportProgress(run), *([StopOnNonFinite()] if stop_on_nonfinite else []),
          WriteTensorBoard(run, logdirs), SaveCheckpoints(), StopOnPreemption(stop_on_nonfinite)]
