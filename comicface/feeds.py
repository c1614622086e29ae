"""How batches reach the steps: a split resident on the devices, or streamed from disk.

Resident (airbench's way): a build's uint8 images and labels go to each device once (one
copy per device, shared by every mesh that holds the device); each train call gathers its
batches there from the epoch's order (put on the devices once per epoch), and an
evaluation gathers its batches by a counter that never leaves the devices. Between an
epoch's start and its end nothing moves between host and device but what the log steps
pull. The images lie flat, one row of H*W*C bytes per example (reshaped inside the step),
a layout that a TPU's tiling of the two minor dimensions barely pads.

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
import threading
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from absl import logging
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


def memory_budget(devices: Sequence[jax.Device]) -> float | None:
  """What resident data may take on each of this process's `devices`: a quarter of the
  smallest one's memory (JAX's `bytes_limit`, what it may allocate), or on CPUs (whose
  devices report none), a quarter of the host's RAM shared by them. None where a device
  that is not a CPU reports no limit."""
  limits = [(d.memory_stats() or {}).get('bytes_limit') for d in devices]
  if all(limits):
    return min(limits) / 4
  if all(d.platform == 'cpu' for d in devices):
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 4 / len(devices)
  return None


TPU_TILES = {1: (32, 128), 2: (16, 128), 4: (8, 128)}  # bytes per item: the tile of the two minor dimensions


def laid_out_bytes(shape: Sequence[int], dtype: Any, platform: str) -> int:
  """The bytes an array takes on a device of `platform`: a TPU pads its two minor
  dimensions to whole tiles (a 1-D array as one row of 1024-item tiles); elsewhere
  its logical size. Once on the device, `on_device_size_in_bytes` says."""
  item = np.dtype(dtype).itemsize
  if platform != 'tpu':
    return math.prod(shape) * item
  if len(shape) == 1:
    return -(-shape[0] // 1024) * 1024 * item
  rows, cols = TPU_TILES[item]
  *major, second, minor = shape
  return math.prod(major) * -(-second // rows) * rows * -(-minor // cols) * cols * item


def flat(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """A build's arrays as they lie resident: each image one row of bytes."""
  return {k: v.reshape(len(v), -1) if k == 'image' else v for k, v in arrays.items()}


def resident_bytes(num_examples: int, image_shape: tuple[int, ...], platform: str) -> int:
  """What a build of `num_examples` images takes resident on one device of `platform`."""
  return (laid_out_bytes((num_examples, math.prod(image_shape)), np.uint8, platform)
          + laid_out_bytes((num_examples,), np.int32, platform))


def fits(splits: Sequence[input_pipeline.Split], image_shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> bool:
  """Whether the build of `splits` (every split of it) fits resident on every device of
  `mesh` (`memory_budget`), counted as the device lays it out; process 0 decides for
  all, so that all run the same program. Says why where it streams."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  needed = resident_bytes(len(splits[0].source), image_shape, local[0].platform)  # the whole build goes
  budget = memory_budget(local)
  decision = budget is not None and needed <= budget
  if jax.process_count() > 1:
    decision = bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))
  if not decision:
    logging.info('Streaming the data: %s; config.speed.feed=\'resident\' keeps it on the devices all the same.',
                 f'{local[0]} reports no memory limit' if budget is None else
                 f'its build takes {needed / 2**20:,.0f} MiB on each device, over the quarter of their memory '
                 f'allowed ({budget / 2**20:,.0f} MiB)')
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


_ON_DEVICE: dict[tuple, dict[str, jax.Array]] = {}  # (build, device id): the build's arrays on that device
_LABELS: dict[tuple, np.ndarray] = {}  # build: its labels on the host
_ON_DEVICE_LOCK = threading.Lock()  # a 'parallel' search's groups put builds from several threads


def on_devices(split: input_pipeline.Split,
               sharding: jax.sharding.NamedSharding) -> tuple[dict[str, jax.Array], np.ndarray]:
  """The whole build of `split` (`flat`) on every device of `sharding`, replicated, and its
  labels on the host: each device holds one copy of a build, put there once and shared by
  every mesh it is in (the sub-meshes of a 'parallel' search, then the retrain on all devices)."""
  build = (split.build, len(split.source))
  local = sorted(sharding.addressable_devices, key=lambda d: d.id)
  with _ON_DEVICE_LOCK:
    missing = [d for d in local if (build, d.id) not in _ON_DEVICE]
    if missing:
      arrays = flat(split.whole().arrays())
      _LABELS[build] = arrays['label']
      for device in missing:
        _ON_DEVICE[build, device.id] = {k: jax.device_put(v, device) for k, v in arrays.items()}
    per_device = [_ON_DEVICE[build, d.id] for d in local]
  arrays = {k: jax.make_array_from_single_device_arrays(per_device[0][k].shape, sharding, [a[k] for a in per_device])
            for k in per_device[0]}
  return arrays, _LABELS[build]


def device_bytes(arrays: dict[str, jax.Array]) -> dict[int, int]:
  """The bytes `arrays` take on each of this process's devices, as the devices hold them."""
  held: dict[int, int] = collections.Counter()
  for array in arrays.values():
    for shard in array.addressable_shards:
      held[shard.device.id] += shard.data.on_device_size_in_bytes()
  return dict(held)


class Resident:
  """A split of a build whose images and labels (every split's) live on every device of
  the steps' mesh. The arrays that say which examples an epoch or evaluation takes have
  the whole build's length, so that every split runs the same compiled steps."""
  resident = True

  def __init__(self, split: input_pipeline.Split, steps: steps_lib.Steps):
    self.split, self.replicated = split, steps.replicated
    self.data, labels = on_devices(split, steps.replicated)
    self.labels = labels[split.index]
    n, b = split.num_examples, split.global_batch
    self.eval_batches = -(-n // b)
    positions = np.zeros(-(-len(split.source) // b) * b, np.int32)  # room for any split of the build
    positions[:self.eval_batches * b] = split.index[np.minimum(np.arange(self.eval_batches * b), n - 1)]
    self.eval_inputs = _put_replicated((positions.reshape(-1, b), np.zeros((), np.int32)), self.replicated)

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
    positions, index = self.eval_inputs
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
