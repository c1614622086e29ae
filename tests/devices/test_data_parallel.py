"""Data parallelism on several devices (run by tests/test_devices.py with N CPU devices):
the batch sharded over 'data' computes what one device does, and nothing crosses devices
that need not."""
import json

import jax
import numpy as np
import pytest

from comicface import feeds
from comicface import steps as steps_lib
from comicface import train
from conftest import tiny_config
from test_steps import make, random_batches, train_over

pytestmark = pytest.mark.skipif(jax.device_count() < 2, reason='runs on several devices: tests/test_devices.py')


def test_a_run_on_all_devices_matches_one_device(tmp_path):
  """The same run on every device with 2 steps per call, and on one device with 1 step per
  call: the metrics of every epoch agree to float tolerance."""
  config = tiny_config(num_epochs=2, **{'speed.steps_per_call': 2})
  many = train.train_and_evaluate(config, str(tmp_path / 'many'))
  single = tiny_config(num_epochs=2)
  one_device = make(single, devices=jax.devices()[:1])
  one = train.train_and_evaluate(single, str(tmp_path / 'one'), lambda n, per_epoch: one_device)
  assert many['history'] and len(many['history']) == len(one['history']) == 2
  for a, b in zip(many['history'], one['history']):
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
  assert many['num_test_examples'] == one['num_test_examples']
  print(json.dumps({'devices': jax.device_count()}))


def test_a_prediction_in_chunks_matches_one_pass():
  config = tiny_config()
  whole, chunked = make(tiny_config(**{'speed.predict_chunk': 0})), make(config)
  state = whole.init(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).integers(0, 256, (64, 128, 128, 1), dtype=np.uint8)
  np.testing.assert_allclose(chunked.predict(state, jax.device_put(images, chunked.data)),
                             whole.predict(state, jax.device_put(images, whole.data)), rtol=1e-5, atol=1e-6)


def test_slices_of_the_batch_stay_on_their_devices():
  """The CNN on slices of 2 images per device trains as on the whole batch, and its
  compiled steps move no slice between devices (nor does gathering a batch of resident data)."""
  whole, sliced = (tiny_config(**{'model.dropout_rate': 0.0, 'speed.cpu_slice_images': k},
                               batch_size=4 * jax.device_count()) for k in (0, 2))
  host = random_batches(whole, 1)
  (state_w, sums_w), (state_s, sums_s) = (train_over(make(c), c, host, (0, 1)) for c in (whole, sliced))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sums_w, sums_s)
  steps = make(sliced)
  state = steps.init(jax.random.PRNGKey(0))
  hparams = steps.put_hparams([steps_lib.hyperparameters(sliced)])
  sums = steps.put_sums(1)
  data = jax.device_put(feeds.flat({k: v[0] for k, v in host.items()}), steps.replicated)  # resident: on every device
  epoch = jax.device_put({'order': np.arange(len(host['label'][0]), dtype=np.int32), 'first': np.int32(0)},
                         steps.replicated)
  for compiled in (steps.train.lower(state, hparams, steps.device_put(host, block=True), sums).compile(),
                   steps.train_resident.lower(state, hparams, data, epoch, sums, count=1).compile(),
                   steps.predict.lower(state, steps.device_put({'x': host['image'][0]})['x']).compile()):
    hlo = compiled.as_text()
    assert not any(op in hlo for op in ('all-gather', 'all-to-all', 'collective-permute')), 'slices cross devices'
