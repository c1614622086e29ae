"""A workdir's claim to one config, the config it records, and the hold of the run using it."""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys
import threading
import time
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections

from comicface import configuration
from comicface import errors

# Fields that change what a workdir's checkpoints mean; the rest (logging, the budget:
# epochs and trials, checkpoints kept, speed) may change between runs of one workdir.
IDENTITY = ('dataset.name', 'dataset.manual_dir', 'dataset.split_scheme', 'dataset.synthetic_pairs',
            'dataset.synthetic_size', 'dataset.synthetic_seed', 'dataset.synthetic_difficulty', 'model', 'dtype',
            'optimizer', 'augment_hflip', 'learning_rate', 'batch_size', 'train_splits', 'seed', 'grid',
            'search', 'halving', 'bayesian_batch', 'seeds', 'early_stopping')
HOLD_FILE = 'run.lock'
HEARTBEAT_SECONDS = 30  # a holder touches its hold file this often...
STALE_SECONDS = 120     # ...and one not touched for this long, on another host, is dead


class WorkdirConflictError(errors.UserError, RuntimeError):
  """The workdir holds a run of another config."""


class NoRunError(errors.UserError, FileNotFoundError):
  """The workdir holds no run (no config.json)."""


class WorkdirBusyError(errors.UserError, RuntimeError):
  """A live run holds the workdir."""


def identity(config: ml_collections.ConfigDict) -> dict:
  """The IDENTITY fields of `config`, as JSON values."""
  values = {k: configuration.get(config, k) for k in IDENTITY}
  return json.loads(json.dumps({k: v.to_dict() if hasattr(v, 'to_dict') else v for k, v in values.items()}))


def check(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether `workdir` holds a run of `config` (False: no run yet).

  Raises WorkdirConflictError, listing the differing fields, if it holds a run
  of another model, dataset or optimisation.
  """
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    return False
  mine, theirs = identity(config), json.loads(path.read_text())['identity']
  diff = {k: (theirs.get(k), mine[k]) for k in mine if theirs.get(k) != mine[k]}
  if diff:
    lines = '\n'.join(f'  {k}: workdir has {a!r}, config has {b!r}' for k, (a, b) in diff.items())
    raise WorkdirConflictError(f'{workdir} belongs to another config:\n{lines}\n'
                               'Use a new --workdir, or the config that made it (or no --config at all '
                               'for --mode=evaluate and --mode=predict).')
  return True


def write_json(path: pathlib.Path, value: Any) -> None:
  """Writes `value` to `path` as JSON atomically: readers (other processes and jobs) see the
  old file or the new one, never part of one, and writers of the same file do not collide."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp')
  tmp.write_text(json.dumps(value, indent=2))
  tmp.replace(path)


def claim(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Checks the workdir (see `check`), recording the config in a new one."""
  if not check(config, workdir) and jax.process_index() == 0:
    write_json(pathlib.Path(workdir) / 'config.json', {'identity': identity(config), 'config': config.to_dict()})


def recorded_config(workdir: str) -> ml_collections.ConfigDict:
  """The config that the run in `workdir` was started with."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise NoRunError(f'{workdir} holds no run (no config.json): train there first with '
                     '--mode=train, or check the --workdir path.')
  return ml_collections.ConfigDict(json.loads(path.read_text())['config'])


@contextlib.contextmanager
def exclusive(path: pathlib.Path) -> Iterator[None]:
  """Waits for, then holds, an flock on `path`: for work that jobs sharing a folder must
  not do at once (generating and building a dataset)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _pid_start(pid: int) -> str | None:
  """When process `pid` started (clock ticks since boot), or None if it is not running."""
  try:
    return pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return None
    except PermissionError:
      pass
    return 'unknown'


class Hold:
  """While entered, this run (its process 0) holds `directory`; a second run is refused.

  The hold is an flock on `directory/run.lock`, which the kernel releases when
  the holder dies, and the file names the holder (host, pid, start time). A file
  left by a dead holder is taken over with a warning. Where the file system does
  not lock across hosts, the holder's heartbeat (the file's mtime) tells a live
  holder on another host from a dead one.
  """

  def __init__(self, directory: str):
    self.path = pathlib.Path(directory) / HOLD_FILE
    self._fd: int | None = None
    self._stop = threading.Event()

  def _holder(self) -> dict:
    try:
      return json.loads(self.path.read_text() or '{}')
    except (OSError, ValueError):
      return {}

  def _alive(self, holder: dict) -> bool:
    if holder.get('host') == socket.gethostname():
      start = _pid_start(holder['pid'])
      return start is not None and start in (holder.get('pid_start'), 'unknown')
    return time.time() - self.path.stat().st_mtime < STALE_SECONDS

  def _refuse(self, holder: dict) -> WorkdirBusyError:
    os.close(self._fd)
    self._fd = None
    who = (f'pid {holder.get("pid")} on {holder.get("host")}, started {holder.get("started")}'
           if holder else 'a process that has not yet written its name')
    return WorkdirBusyError(
        f'{self.path.parent} is in use by another run: {who} ({holder.get("command", "?")}). '
        'Wait for it to finish or stop it: two runs on one workdir would write the same checkpoints.')

  def __enter__(self) -> Hold:
    if jax.process_index() != 0:  # the other processes of a multi-process run share process 0's hold
      return self
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise self._refuse(self._holder()) from None
    previous = self._holder()
    if previous and self._alive(previous):  # a file system without locks across hosts
      raise self._refuse(previous)
    if previous:
      logging.warning('Taking over %s from a run that ended without releasing it (pid %s on %s, '
                      'started %s).', self.path.parent, previous.get('pid'), previous.get('host'),
                      previous.get('started'))
    me = {'host': socket.gethostname(), 'pid': os.getpid(), 'pid_start': _pid_start(os.getpid()),
          'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)}
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, json.dumps(me).encode(), 0)
    os.fsync(self._fd)
    threading.Thread(target=self._heartbeat, daemon=True).start()
    return self

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      os.utime(self.path)

  def __exit__(self, *exc) -> None:
    if self._fd is None:
      return
    self._stop.set()
    os.ftruncate(self._fd, 0)  # an empty file: released cleanly
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None
