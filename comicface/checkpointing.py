"""Orbax checkpoints: the latest N and the best by validation accuracy, kept together."""
from __future__ import annotations

import contextlib
import functools
import json
import math
import pathlib
import threading
from typing import Any, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from comicface import errors
from comicface import metrics


class CheckpointError(errors.UserError, RuntimeError):
  """A checkpoint could not be written (disk full, permissions...)."""


def rank(record: dict[str, float], by: str) -> tuple[float, float, float]:
  """The order of epochs (and checkpoints, and trials), higher first: the better `by`
  (config.best_by: higher, or lower for a loss), then lower validation loss, then an
  earlier epoch; a NaN ranks last."""
  finite = lambda v: v if math.isfinite(v) else -math.inf
  sign = 1.0 if metrics.maximize(by) else -1.0
  return (finite(sign * record[by]), finite(-record['val_loss']), -record['epoch'])


def metrics_of(record: dict[str, Any]) -> dict[str, float]:
  """What a checkpoint records of its epoch's record, for `rank` to keep the best."""
  return {k: v for k, v in record.items() if isinstance(v, (int, float))}


def manager(workdir: str, keep_latest: int, best_by: str) -> ocp.CheckpointManager:
  """A manager in `workdir/checkpoints` saving `state` (arrays) and `meta` (JSON), keeping
  the latest `keep_latest` and the best by `rank` (`best_by`).

  Half-written checkpoints (`N.orbax-checkpoint-tmp`, left by a kill) are ignored.
  """
  by = functools.partial(rank, by=best_by)
  options = ocp.CheckpointManagerOptions(
      best_fn=by, best_mode='max',
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(keep_latest),
          policies.BestN(get_metric_fn=by, n=1, keep_checkpoints_without_metrics=False),
      ]))
  return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints', options=options)


# Orbax's saves and restores from several threads at once (a search's groups side by side)
# corrupt each other's temporary files: in threads other than the main one, each is done
# whole, one at a time.
_ONE_AT_A_TIME = threading.Lock()


def _serial() -> contextlib.AbstractContextManager:
  return _ONE_AT_A_TIME if threading.current_thread() is not threading.main_thread() else contextlib.nullcontext()


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         metrics: dict[str, float] | None = None) -> None:
  """Starts an asynchronous save (in the main thread; elsewhere it finishes before returning);
  a failure (of this or the previous save) raises CheckpointError."""
  with _serial(), _explained(manager, step):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)),
              metrics=metrics, force=True)
    if threading.current_thread() is not threading.main_thread():
      manager.wait_until_finished()


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for pending saves; a failure raises CheckpointError."""
  with _explained(manager, None):
    manager.wait_until_finished()


class _explained:
  """Turns a failed write into an error that says what was lost and what was kept."""

  def __init__(self, manager: ocp.CheckpointManager, step: int | None):
    self.manager, self.step = manager, step

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if error is None or not isinstance(error, (OSError, ValueError, RuntimeError)) or isinstance(
        error, CheckpointError):
      return False
    kept = sorted(s for s in self.manager.all_steps(read=True))
    raise CheckpointError(
        f'Writing a checkpoint{"" if self.step is None else f" at step {self.step}"} in '
        f'{self.manager.directory} failed: {error}. The checkpoints already there are intact '
        f'(steps {kept}); free space (or fix permissions) and rerun to resume.') from error


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
  """Restores `step` into the shape, dtype and sharding of `target` (arrays or abstract)."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
  with _serial():
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        meta=ocp.args.JsonRestore()))
  return out['state'], out['meta']


class CheckpointRestoreError(errors.UserError, RuntimeError):
  """A checkpoint could not be read, for a cause outside its files (memory, permissions, I/O)."""


# What a damaged checkpoint's restore raises, read off Orbax and TensorStore: its files missing,
# short or unreadable as what they claim to be. Anything else is not taken for damage.
_DAMAGE = ('NOT_FOUND:', 'DATA_LOSS:', 'OUT_OF_RANGE:', 'FAILED_PRECONDITION:', 'was not found in the checkpoint')
_NOT_DAMAGE = ('RESOURCE_EXHAUSTED', 'PERMISSION_DENIED', 'UNAVAILABLE', 'DEADLINE_EXCEEDED', 'ABORTED',
               'out of memory', 'Out of memory', 'Input/output error')


def _causes(error: BaseException) -> list[BaseException]:
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def damaged(error: BaseException, folder: pathlib.Path) -> bool:
  """Whether `error`, raised restoring the checkpoint in `folder`, shows that the checkpoint's
  own files are damaged (missing, truncated, failing their checks), rather than that
  something around them failed (memory, permissions, a transient I/O error): every file of
  the checkpoint reads back whole, and the error says damage and nothing else."""
  try:
    for path in folder.rglob('*'):
      if path.is_file():
        path.read_bytes()
  except OSError as e:
    return isinstance(e, FileNotFoundError)
  causes = _causes(error)
  if any(isinstance(e, (MemoryError, PermissionError)) or (isinstance(e, OSError) and
         not isinstance(e, FileNotFoundError)) or any(s in str(e) for s in _NOT_DAMAGE) for e in causes):
    return False
  return any(isinstance(e, (FileNotFoundError, json.JSONDecodeError)) or any(s in str(e) for s in _DAMAGE)
             for e in causes)


def _agreed(verdict: str, member: int) -> tuple[str, int]:
  """The verdict of all processes ('error' if any has one, else 'damaged' if any, else 'ok'),
  and the member whose checkpoint it is about."""
  if jax.process_count() == 1:
    return verdict, member
  order = ('ok', 'damaged', 'error')
  codes = multihost_utils.process_allgather(np.asarray([order.index(verdict), member]))
  worst = codes[np.argmax(codes[:, 0])]
  return order[int(worst[0])], int(worst[1])


def _delete_newer(managers: Sequence[ocp.CheckpointManager], step: int) -> None:
  """Deletes the checkpoints after `step` of each of `managers` (of a stack resumed at `step`)."""
  for manager in managers:
    for newer in (s for s in manager.all_steps() if s > step):
      logging.warning('Deleting checkpoint %d of %s, newer than the others of its stack.', newer, manager.directory)
      manager.delete(newer)


def restore_latest(managers: Sequence[ocp.CheckpointManager],
                   targets: Sequence[Any]) -> list[tuple[Any, dict]] | None:
  """The newest step that every manager holds and reads back, restored from each (into the
  matching target); None if there is none.

  A checkpoint that fails to read because its files are damaged (`damaged`) is moved aside
  to `checkpoints/corrupt-N`, with a warning, and the previous one is tried; any other
  failure raises CheckpointRestoreError naming the checkpoint and the cause, and leaves
  every file in place. All processes agree on the verdict before anything is renamed.
  Steps newer than the one restored (a save that a kill cut short in some managers) are
  deleted: training recomputes them as they were."""
  while True:
    common = set.intersection(*(set(m.all_steps()) for m in managers))
    if not common:
      _delete_newer(managers, -1)  # a first save that a kill cut short in some managers
      return None
    step, restored, verdict, failed, cause = max(common), [], 'ok', 0, 'in another process'
    for i, (manager, target) in enumerate(zip(managers, targets)):
      try:
        restored.append(restore(manager, step, target))
      except Exception as e:  # pylint: disable=broad-except  (tensorstore raises many kinds)
        damage = damaged(e, pathlib.Path(manager.directory) / str(step))
        verdict, failed, cause = ('damaged' if damage else 'error'), i, f'{type(e).__name__}: {str(e)[:300]}'
        break
    verdict, failed = _agreed(verdict, failed)
    if verdict == 'ok':
      _delete_newer(managers, step)
      return restored
    folder = pathlib.Path(managers[failed].directory) / str(step)
    if verdict == 'error':
      raise CheckpointRestoreError(
          f'Checkpoint {folder} could not be read ({cause}), and its files are intact: nothing was moved or '
          'deleted. Fix the cause (memory, permissions, the file system) and rerun to resume.')
    logging.warning('Checkpoint %s is damaged (%s); moving it aside to corrupt-%d and using the previous one.',
                    folder, cause, step)
    if jax.process_index() == 0:
      folder.rename(folder.with_name(f'corrupt-{step}'))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'comicface checkpoint {folder} set aside')
    managers[failed].reload()
