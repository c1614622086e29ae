"""What a run tells its user: console lines and TensorBoard events (process 0 only)."""
from __future__ import annotations

import pathlib
import time
from typing import Sequence

from absl import logging
import jax
import ml_collections


def _values(records: Sequence[dict]) -> str:
  """`train_loss 0.1234` for one trial; `train_loss 0.1234/0.2345` for a stack of trials."""
  return ' '.join(f'{k} ' + '/'.join(f'{r[k]:.4f}' for r in records)
                  for k, v in records[0].items() if isinstance(v, float))


class LogSteps:
  """Which train calls end at a log step (where the loop pulls metrics and the processes
  agree: actions.Decide): the first call to end `every` or more steps after the last log
  step, or after `start`; so never more often than the calls allow."""

  def __init__(self, every: int, start: int):
    self.every, self.last = max(1, every), start

  def due(self, step: int) -> bool:
    """Whether the call that ended at `step` ends at a log step (called once per call)."""
    if step - self.last >= self.every:
      self.last = step
      return True
    return False


class Progress:
  """`epoch 2/4 step 120/720 train_loss 0.1234 train_accuracy 0.9812 312.4 img/s ETA 1m23s`."""

  def __init__(self, total_steps: int, global_batch: int):
    self.total, self.batch = total_steps, global_batch
    self.t0, self.s0 = None, None

  def log(self, step: int, epoch: int, num_epochs: int, records: Sequence[dict]) -> None:
    now = time.perf_counter()
    if self.t0 is None:  # the first interval includes compilation; rates start after it
      self.t0, self.s0 = now, step
      rate, eta = float('nan'), '?'
    else:
      rate = (step - self.s0) * self.batch / max(now - self.t0, 1e-9)
      secs = int((self.total - step) * self.batch / rate) if rate > 0 else 0
      eta = f'{secs // 60}m{secs % 60:02d}s'
    if jax.process_index() == 0:
      logging.info('epoch %d/%d step %d/%d %s %.1f img/s ETA %s', epoch, num_epochs, step,
                   self.total, _values(records), rate, eta)


def log_epoch(names: Sequence[str], records: Sequence[dict]) -> None:
  if jax.process_index() == 0:
    label = f' (trials {"/".join(n.split("_")[0] for n in names)})' if len(names) > 1 else ''
    logging.info('epoch %d%s: %s', records[0]['epoch'], label, _values(records))


class Writer:
  """TensorBoard events in `logdir/tensorboard` via tensorboardX (no TensorFlow)."""

  def __init__(self, logdir: str, config: ml_collections.ConfigDict):
    self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(logdir) / 'tensorboard'))
      self._tb.add_text('config', '```\n' + str(config) + '\n```')

  def scalars(self, step: int, values: dict) -> None:
    if self._tb:
      for k, v in values.items():
        if isinstance(v, float):
          self._tb.add_scalar(k, v, step)
      self._tb.flush()

  def hparams(self, hparams: dict, metrics: dict) -> None:
    if self._tb:
      self._tb.add_hparams(hparams, metrics, name='.', global_step=0)

  def close(self) -> None:
    if self._tb:
      self._tb.close()
