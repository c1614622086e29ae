"""Preemption: SIGTERM (what a preempted machine gets first) asks this process to save and
stop. `actions` takes the request to all processes at one step; waits end on it."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from absl import logging


class Preempted(Exception):
  """Raised once a preempted run has saved its checkpoint (or a wait was ended); the
  command exits 0, and a rerun resumes."""


_PREEMPTED = threading.Event()  # set by SIGTERM; every run of the process sees it
_HANDLING = [0]  # how deep handle_sigterm is entered


def _on_sigterm(signum, frame) -> None:
  del signum, frame
  logging.warning('SIGTERM received: saving a checkpoint at the next step, then exiting.')
  _PREEMPTED.set()


def request_stop() -> None:
  """Asks every run of this process to save and stop, as SIGTERM does."""
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
