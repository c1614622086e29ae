"""A search's groups side by side on disjoint sets of devices (run by tests/test_devices.py
with N CPU devices): each trial ends as it does trained alone, one after another."""
import json
import os

import jax
import pytest

from comicface import search
from conftest import tiny_config

pytestmark = pytest.mark.skipif(jax.device_count() < 2, reason='runs on several devices: tests/test_devices.py')


def sixteen_trials(mode: str):
  """4 shapes (filters) x 4 values (learning and dropout rates), 1 epoch."""
  config = tiny_config(num_epochs=1, grid_parallel=mode)
  config.grid.model = {'filters_1': (4, 8), 'filters_2': (4, 6), 'dropout_rate': (0.0, 0.5)}
  config.grid.learning_rate = (1e-2, 3e-3)
  return config


def test_sixteen_trials_of_four_shapes_side_by_side_equal_one_after_another(tmp_path):
  """The groups of a shape on sub-meshes at once, against each trial alone: run here on all
  devices, or (COMICFACE_SEQUENTIAL_RESULTS) read from the driver's run on one device."""
  parallel = search.run(sixteen_trials('parallel'), str(tmp_path / 'parallel'))
  reference = os.environ.get('COMICFACE_SEQUENTIAL_RESULTS')
  sequential = (json.loads(open(reference).read()) if reference
                else search.run(sixteen_trials('sequential'), str(tmp_path / 'sequential')))
  assert parallel['grid_parallel'] == 'parallel' and sequential['grid_parallel'] == 'sequential'
  assert len(parallel['trials']) == 16
  used = {tuple(json.loads(p.read_text())['trained_by']['devices'])
          for p in (tmp_path / 'parallel' / 'trials').glob('*/trial.json')}
  assert len(used) == min(4, jax.device_count())  # the premise: the groups ran on sub-meshes...
  assert all(not set(a) & set(b) for a in used for b in used if a != b)  # ...of disjoint devices
  for a, b in zip(parallel['trials'], sequential['trials']):
    assert a['trial'] == b['trial'] and a['best_epoch'] == b['best_epoch']
    assert a['val_accuracy'] == pytest.approx(b['val_accuracy'], abs=1e-6)
    assert a['val_loss'] == pytest.approx(b['val_loss'], rel=1e-4)
  assert parallel['winner'] == sequential['winner']


def test_a_build_is_held_once_per_device_whatever_the_meshes(tmp_path):
  """Resident data put for two disjoint sub-meshes, then for all devices (a 'parallel'
  search's groups, then its retrain): each device holds one buffer of the build's images,
  of the size feeds counts for it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from comicface import feeds, input_pipeline, steps as steps_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  builder = input_pipeline.prepare(config, str(tmp_path))
  split = input_pipeline.open_split(builder, 'train', config.batch_size, config.dataset.split_scheme)
  devices = jax.devices()
  half = len(devices) // 2
  shape = (len(split.source), int(np.prod(input_pipeline.Task.of(builder).image_shape)))

  def buffers() -> dict[int, set[int]]:
    """The buffers of every live array of the build's images' shape (other tests' builds too), by device."""
    held = {}
    for array in jax.live_arrays():
      if array.shape == shape and array.dtype == np.uint8:
        for shard in array.addressable_shards:
          held.setdefault(shard.device.id, set()).add(shard.data.unsafe_buffer_pointer())
    return held
  before = buffers()
  meshes = [steps_lib.make_mesh(1, devices[:half]), steps_lib.make_mesh(1, devices[half:]), steps_lib.make_mesh(1)]
  held = [feeds.on_devices(split, jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec()))[0] for m in meshes]
  new = {d: b - before.get(d, set()) for d, b in buffers().items()}
  assert sorted(d for d, b in new.items() if b) == sorted(d.id for d in devices)  # the premise: each was given it
  assert all(len(b) <= 1 for b in new.values()), new
  counted = feeds.resident_bytes(shape[0], input_pipeline.Task.of(builder).image_shape, 'cpu')
  assert set(feeds.device_bytes(held[-1]).values()) == {counted}
