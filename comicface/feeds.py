"""How batches reach the steps: a split resident on the devices, or streamed from disk.

Resident (airbench's way): a split's uint8 images and labels go to every device of the
mesh once per process; each train call gathers its batches there from the epoch's order
(put on the devices once per epoch), and an evaluation gathers its batches by a counter
that never leaves the devices. Between an epoch's start and its end nothing moves
between host and device but what the log steps pull.

Streamed: grain reads this process's slice of every batch (input_pipeline), and each
block is put on the devices two blocks ahead of the step that takes it.

Both visit the examples in `input_pipeline.epoch_order`, so a run trains alike on
either (bitwise, on CPUs). `config.speed.feed` chooses; 'auto' is `fits`.
"""
from __future__ import annotations

import collections
import functools
import math
import os
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

import jax
from jax.experimental import multihost_utils
import numpy as np

from comicface import input_pipeline
from comicface import steps as steps_lib

T = TypeVar('T')
TrainCall = Callable[[steps_lib.State, steps_lib.HParams, steps_lib.Metrics], tuple[steps_lib.State, steps_lib.Metrics]]


class Feed(Protocol):
  split: input_pipeline.Split
  resident: bool
  labels: np.ndarray  # of the split's examples, in its order

  def train_calls(self, steps: steps_lib.Steps, seed: int, epoch: int, start: int) -> Iterator[tuple[int, TrainCall]]:
    """(steps taken, call) for the rest of epoch `epoch` from its step `start`, in blocks of
    `steps.steps_per_call`; call(state, hparams, sums) -> (state, sums)."""

  def eval_outputs(self, steps: steps_lib.Steps, state: steps_lib.State) -> Iterator[jax.Array]:
    """Each evaluation batch's class log-probabilities, still on the devices (every example
    once, in order, the last batch padded: see `input_pipeline.eval_batches`)."""


def memory_budget(devices: Sequence[jax.Device]) -> float:
  """What resident data may take on this process's `devices`: a quarter of each one's
  memory, or on CPUs (whose devices report none), a quarter of the host's RAM shared by them."""
  limits = [(d.memory_stats() or {}).get('bytes_limit') for d in devices]
  if all(limits):
    return min(limits) / 4
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 4 / len(devices)


def fits(splits: Sequence[input_pipeline.Split], image_shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> bool:
  """Whether the build of `splits` (every split of it) fits resident on every device of
  `mesh` (`memory_budget`); process 0 decides for all, so that all run the same program."""
  nbytes = len(splits[0].source) * (math.prod(image_shape) + 4)  # the whole build goes
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  decision = nbytes <= memory_budget(local)
  if jax.process_count() > 1:
    decision = bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))
  return decision


def resident(setting: str, splits: Sequence[input_pipeline.Split], image_shape: tuple[int, ...],
             steps: steps_lib.Steps) -> bool:
  """config.speed.feed for `splits`: 'resident', 'stream', or 'auto' (`fits`)."""
  if setting != 'auto':
    return setting == 'resident'
  return fits(splits, image_shape, steps.replicated.mesh)


def open_feed(split: input_pipeline.Split, steps: steps_lib.Steps, resident: bool) -> Feed:
  return Resident(split, steps) if resident else Streamed(split)


def _put_replicated(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """The whole of each array of `tree` (the same in every process) on every device of `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


_ON_DEVICES: dict[tuple, tuple[dict[str, jax.Array], np.ndarray]] = {}  # (build, devices): its arrays, and labels


class Resident:
  """A split of a build whose images and labels (every split's) live on every device of
  the steps' mesh. The arrays that say which examples an epoch or evaluation takes have
  the whole build's length, so that every split runs the same compiled steps."""
  resident = True

  def __init__(self, split: input_pipeline.Split, steps: steps_lib.Steps):
    self.split, self.replicated = split, steps.replicated
    key = (split.build, len(split.source), tuple(d.id for d in steps.replicated.mesh.devices.flat))
    if key not in _ON_DEVICES:
      arrays = split.whole().arrays()
      _ON_DEVICES[key] = {k: _put_replicated(v, steps.replicated) for k, v in arrays.items()}, arrays['label']
    self.data, labels = _ON_DEVICES[key]
    self.labels = labels[split.index]
    n, b = split.num_examples, split.global_batch
    self.eval_batches = -(-n // b)
    positions = np.zeros(-(-len(split.source) // b) * b, np.int32)  # room for any split of the build
    positions[:self.eval_batches * b] = split.index[np.minimum(np.arange(self.eval_batches * b), n - 1)]
    self._eval = _put_replicated((positions.reshape(-1, b), np.zeros((), np.int32)), self.replicated)

  def train_calls(self, steps: steps_lib.Steps, seed: int, epoch: int, start: int) -> Iterator[tuple[int, TrainCall]]:
    per_epoch = self.split.num_examples // self.split.global_batch
    order = np.zeros(len(self.split.source), np.int32)
    order[:per_epoch * self.split.global_batch] = self.split.index[
        input_pipeline.epoch_order(self.split.num_examples, seed, epoch)[:per_epoch * self.split.global_batch]]
    on_devices = _put_replicated({'order': order, 'first': np.asarray(epoch * per_epoch, np.int32)},
                                 self.replicated)
    for first in range(start, per_epoch, steps.steps_per_call):
      count = min(steps.steps_per_call, per_epoch - first)
      yield count, lambda state, hparams, sums, count=count: steps.train_resident(
          state, hparams, self.data, on_devices, sums, count)

  def eval_outputs(self, steps: steps_lib.Steps, state: steps_lib.State) -> Iterator[jax.Array]:
    positions, index = self._eval
    for _ in range(self.eval_batches):
      log_probs, index = steps.eval_resident(state, self.data['image'], positions, index)
      yield log_probs


def prefetch(items: Iterator[T], put: Callable[[T], Any], ahead: int = 2) -> Iterator[Any]:
  """`put(item)` (a transfer to the devices) for each item, started `ahead` items before
  the item is used."""
  queue = collections.deque()
  for item in items:
    queue.append(put(item))
    if len(queue) > ahead:
      yield queue.popleft()
  yield from queue


class Streamed:
  """A split read by grain from its build, batch by batch."""
  resident = False

  def __init__(self, split: input_pipeline.Split):
    self.split = split

  @functools.cached_property
  def labels(self) -> np.ndarray:
    return self.split.labels()

  def train_calls(self, steps: steps_lib.Steps, seed: int, epoch: int, start: int) -> Iterator[tuple[int, TrainCall]]:
    blocks = input_pipeline.train_batches(self.split, seed, epoch, start, steps.steps_per_call)
    for block in prefetch(blocks, lambda b: steps.device_put(b, block=True)):
      yield block['label'].shape[0], lambda state, hparams, sums, block=block: steps.train(state, hparams, block, sums)

  def eval_outputs(self, steps: steps_lib.Steps, state: steps_lib.State) -> Iterator[jax.Array]:
    for batch in prefetch(input_pipeline.eval_batches(self.split), steps.device_put):
      yield steps.eval(state, batch['image'])
