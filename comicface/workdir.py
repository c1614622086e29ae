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
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from comicface import configuration
from comicface import errors
from comicface import preemption

HOLD_FILE = 'run.lock'
# A holder touches its hold file this often; one not touched for STALE_BEATS of these, by the
# file system's own clock, is dead. Raise it where the file system caches attributes longer.
HEARTBEAT_SECONDS = float(os.environ.get('COMICFACE_HEARTBEAT_SECONDS', 30))
STALE_BEATS = 4
TAKEOVER_SECONDS = (STALE_BEATS + 1) * HEARTBEAT_SECONDS  # what a run waits for a fresh holder to prove itself


class WorkdirConflictError(errors.UserError, RuntimeError):
  """The workdir holds a run of another config."""


class NoRunError(errors.UserError, FileNotFoundError):
  """The workdir holds no run (no config.json)."""


class WorkdirBusyError(errors.UserError, RuntimeError):
  """A live run holds the workdir."""


class HoldLostError(errors.UserError, RuntimeError):
  """A run could not keep up its hold on its workdir: another run may take it over."""


def identity(config: ml_collections.ConfigDict) -> dict:
  """What a workdir's checkpoints mean: the fields of `config` whose role is static, a value
  or identity (`configuration.ROLES`), as JSON values. The rest (logging, the budget: epochs
  and trials, checkpoints kept, speed) may change between runs of one workdir."""
  names = [k for k, role in configuration.ROLES.items() if role in configuration.IDENTITY_ROLES]
  values = {k: configuration.get(config, k) for k in names}
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
  theirs = configuration.identity_now(theirs)  # a workdir of an earlier release
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
  """The config that the run in `workdir` was started with (with the fields an earlier
  release did not have, as they were then)."""
  path = pathlib.Path(workdir) / 'config.json'
  if not path.exists():
    raise NoRunError(f'{workdir} holds no run (no config.json): train there first with '
                     '--mode=train, or check the --workdir path.')
  return configuration.with_earlier_fields(json.loads(path.read_text())['config'])


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


def file_system_now(directory: pathlib.Path) -> float:
  """The time by the clock of the file system holding `directory` (a file's mtime is set by
  the server on NFS and the like), so that heartbeats are judged without trusting clocks."""
  probe = directory / f'.clock.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}'
  probe.touch()
  try:
    return probe.stat().st_mtime
  finally:
    probe.unlink(missing_ok=True)


_HELD: set[Hold] = set()  # the holds this process holds now


def hold_lost() -> str | None:
  """Why a hold of this process could not write its heartbeat; None where none was lost."""
  return next((hold.lost for hold in list(_HELD) if hold.lost), None)


def raise_if_hold_lost(lost: bool | None = None) -> None:
  """Raises HoldLostError if a hold this process holds could not write its heartbeat, or
  where `lost` says one of another process could not (`actions.agree`)."""
  reason = hold_lost() or (lost and 'A hold of another process on its workdir could not write its heartbeat.')
  if reason:
    raise HoldLostError(f'{reason} This run stops, so that no other run trains in its place at the same '
                        'time; its checkpoints are kept: rerun to resume.')


class Hold:
  """While entered, this run (its process 0) holds `directory`; a second run is refused.

  The hold is an flock on `directory/run.lock`, whose file names the holder (host, pid,
  start time) and carries its heartbeat (the file's mtime, touched every
  HEARTBEAT_SECONDS). Whether an earlier holder still lives is told, in this order:
  - by the lock, where the file system keeps locks (a dead process's lock is released);
  - on the same host, by its pid (and that pid's start time);
  - on another host, by its heartbeat, measured against the file system's own clock: stale
    after STALE_BEATS heartbeats without a beat.
  With `wait` seconds, a holder whose heartbeat is still fresh (a job requeued right after
  a kill, on another node) is watched until it beats (alive: refused) or goes stale (dead:
  taken over, with a warning), as is a lock held beyond that (a dead client's lease).
  A heartbeat that cannot be written is recorded (`hold_lost`): the run stops.
  """

  def __init__(self, directory: str, wait: float = 0.0):
    self.path = pathlib.Path(directory) / HOLD_FILE
    self.wait = wait
    self._fd: int | None = None
    self._stop = threading.Event()
    self.lost: str | None = None  # why its heartbeat could not be written

  def _holder(self) -> dict:
    try:
      return json.loads(self.path.read_text() or '{}')
    except (OSError, ValueError):
      return {}

  def _beat_age(self) -> float:
    """Seconds since the holder's last heartbeat, by the file system's clock."""
    return file_system_now(self.path.parent) - self.path.stat().st_mtime

  def _verdict(self, locked: bool, holder: dict, first_beat: float) -> str:
    """'free', 'alive' or 'unsure' (a fresh heartbeat, not yet seen to beat)."""
    if locked and not holder:
      return 'free'  # released cleanly
    if locked and holder.get('host') == socket.gethostname():
      start = _pid_start(holder['pid'])
      return 'alive' if start is not None and start in (holder.get('pid_start'), 'unknown') else 'free'
    beating = self.path.stat().st_mtime > first_beat
    stale = self._beat_age() > STALE_BEATS * HEARTBEAT_SECONDS
    if not locked:  # its holder lives, unless its heartbeat stopped long ago (a dead client's lease)
      return 'alive' if beating or not stale else 'unsure'
    return 'free' if stale else 'alive' if beating else 'unsure'  # a file system without shared locks

  def _refuse(self, holder: dict) -> WorkdirBusyError:
    who = (f'pid {holder.get("pid")} on {holder.get("host")}, started {holder.get("started")}'
           if holder else 'a process that has not yet written its name')
    return WorkdirBusyError(
        f'{self.path.parent} is in use by another run: {who} ({holder.get("command", "?")}). '
        'Wait for it to finish or stop it: two runs on one workdir would write the same checkpoints.')

  def _give_up(self) -> None:
    """Closes the hold file, not held."""
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> Hold:
    """Takes the hold, waiting where the holder may be dead (`wait`); raises WorkdirBusyError
    where it lives, and preemption.Preempted on SIGTERM while waiting (`preemption.handle_sigterm`).
    On several processes, process 0 takes it for all, and every process takes its outcome."""
    outcomes = (None, WorkdirBusyError, preemption.Preempted)
    error = None
    if jax.process_index() == 0:
      try:
        self._take()
      except outcomes[1:] as e:
        error = e
    if jax.process_count() > 1:
      outcome = int(multihost_utils.broadcast_one_to_all(np.int32(outcomes.index(type(error) if error else None))))
      if outcome and error is None:
        error = outcomes[outcome](f'Process 0 could not hold {self.path.parent}: it says why.')
    if error:
      raise error
    return self

  def _take(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, first_beat, told = time.monotonic() + self.wait, self.path.stat().st_mtime, False
    while True:
      try:
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
      except BlockingIOError:
        locked = False
      holder = self._holder()
      verdict = self._verdict(locked, holder, first_beat)
      if verdict == 'free':
        break
      if locked:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
      if verdict == 'alive' or time.monotonic() >= deadline:
        self._give_up()
        raise self._refuse(holder)
      if not told:
        logging.warning('%s is held by pid %s on %s, whose heartbeat is fresh: waiting up to %.0f s for it to '
                        'beat (alive) or go stale (dead).', self.path.parent, holder.get('pid'), holder.get('host'),
                        self.wait)
        told = True
      if preemption.preempted_within(min(HEARTBEAT_SECONDS / 4, max(0.0, deadline - time.monotonic()))):
        self._give_up()
        logging.warning('Stopped while waiting for the hold of %s (SIGTERM); rerun the same command to go on.',
                        self.path.parent)
        raise preemption.Preempted
    if holder:
      logging.warning('Taking over %s from a run that ended without releasing it (pid %s on %s, '
                      'started %s).', self.path.parent, holder.get('pid'), holder.get('host'), holder.get('started'))
    me = {'host': socket.gethostname(), 'pid': os.getpid(), 'pid_start': _pid_start(os.getpid()),
          'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)}
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, json.dumps(me).encode(), 0)
    os.fsync(self._fd)
    _HELD.add(self)
    threading.Thread(target=self._heartbeat, daemon=True).start()

  def _heartbeat(self) -> None:
    """Touches the hold file; stops, recording why, if it cannot or if the file is no longer
    the one held (deleted, or replaced by another run's)."""
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        if os.stat(self.path).st_ino != os.fstat(self._fd).st_ino:
          raise FileNotFoundError(f'{self.path} was replaced')
        os.utime(self.path)
      except OSError as e:
        if not self._stop.is_set():
          self.lost = f'The heartbeat of {self.path} could not be written ({e}).'
          logging.error('%s', self.lost)
        return

  def __exit__(self, *exc) -> None:
    if self._fd is None:
      return
    self._stop.set()
    _HELD.discard(self)
    os.ftruncate(self._fd, 0)  # an empty file: released cleanly
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None
