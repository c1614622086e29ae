"""The two feeds: a split resident on the devices trains and evaluates bitwise as the
streamed one, and an epoch on resident data moves nothing between host and device but
what its log steps pull."""
import jax
from jax._src import array as jax_array
import numpy as np
import pytest

from comicface import actions, feeds, input_pipeline, train
from conftest import override, tiny_config
from configs import mlp, resnet


def fit(config, workdir, learning_rates=None):
  """Trains `config` in `workdir` (a stack of its learning rates, if given); returns the
  run's state on the host, each member's history and its test record."""
  members = [train.Member(f'lr{lr}', str(workdir / f'lr{lr}'), override(tiny_like(config), learning_rate=lr),
                          trial=f'lr{lr}') for lr in learning_rates or ()]
  run = train.setup(config, str(workdir), members)
  try:
    assert train.fit(run, actions.standard(run))
    assert run.train.resident == (config.speed.feed == 'resident')  # the premise: the feed asked for
    test = train.test(run, run.step)[0] if not learning_rates else None
  finally:
    run.close()
  return jax.device_get(run.state), [m.history for m in run.members], test


def tiny_like(config):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(config.to_dict())


def small(config):
  return override(config, num_epochs=2, **{'dataset.synthetic_pairs': 48, 'batch_size': 8,
                                            'log_every_steps': 100})


CONFIGS = {'cnn': lambda: tiny_config(num_epochs=2),
           'cnn_augmented': lambda: tiny_config(num_epochs=2, augment='flip_lr|random_crop(pad=4)|mixup(0.2)',
                                                ema_decay=0.9, grad_accum_steps=2),
           'mlp': lambda: small(mlp.get_config('runlocal')),
           'resnet': lambda: small(resnet.get_config('runlocal'))}


@pytest.mark.slow  # two whole runs a case
@pytest.mark.parametrize('stacked', [False, True], ids=['single', 'stacked'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_resident_and_streamed_runs_are_bitwise_equal(name, stacked, tmp_path):
  """The same run fed both ways: equal parameters, optimizer and batch statistics, equal
  histories and test records (CNN, with augmentation, the average and accumulation too, MLP,
  and the ResNet with batch statistics)."""
  rates = (1e-2, 3e-3) if stacked else None
  runs = [fit(override(CONFIGS[name](), **{'speed.feed': feed}), tmp_path / feed, rates)
          for feed in ('resident', 'stream')]
  (state_r, history_r, test_r), (state_s, history_s, test_s) = runs
  assert history_r == history_s and len(history_r[0]) == 2
  assert test_r == test_s
  leaves = jax.tree_util.tree_flatten_with_path(state_r)[0]
  assert len(leaves) > 4 and int(np.ravel(state_r['step'])[0]) > 0
  for (path, a), b in zip(leaves, jax.tree.leaves(state_s)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


class Transfers:
  """Counts pulls from the devices (every conversion of a jax.Array to numpy goes through
  `ArrayImpl._value`), waits for them (`block_until_ready`) and explicit puts, while the
  test's patches are in place."""

  def __init__(self, monkeypatch):
    self.pulls = self.puts = self.waits = 0
    value = jax_array.ArrayImpl._value

    def pull(array):
      self.pulls += 1
      return value.fget(array)
    monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(pull))
    monkeypatch.setattr(jax_array.ArrayImpl, 'block_until_ready',
                        self._counted(jax_array.ArrayImpl.block_until_ready, 'waits'))
    monkeypatch.setattr(jax, 'block_until_ready', self._counted(jax.block_until_ready, 'waits'))
    for name in ('device_put', 'make_array_from_process_local_data'):
      monkeypatch.setattr(jax, name, self._counted(getattr(jax, name), 'puts'))

  def _counted(self, function, counter):
    def counted(*args, **kwargs):
      setattr(self, counter, getattr(self, counter) + 1)
      return function(*args, **kwargs)
    return counted

  @property
  def syncs(self) -> int:
    return self.pulls + self.waits


class Record(actions.Action):
  """After each block (and the standard actions), the step, whether it ended at a log step,
  and the transfers so far."""

  def __init__(self, transfers):
    self.transfers, self.seen = transfers, []

  def after_steps(self, run, sums, at_log):
    self.seen.append((run.step, at_log, self.transfers.syncs, self.transfers.puts))


GPU_MLP = {'speed.kernels': 'xla', 'dataset.synthetic_pairs': 160, 'dataset.synthetic_size': 24, 'batch_size': 1,
           'log_every_steps': 50}  # what a GPU gets: Flax's layers, and 'auto' steps per call (32)


@pytest.mark.parametrize('name, config, per_call', [
    ('cnn', lambda: tiny_config(num_epochs=2, log_every_steps=3), 1),
    ('mlp_as_on_a_gpu', lambda: override(mlp.get_config('runlocal'), num_epochs=1, **GPU_MLP), 32)])
def test_an_epoch_on_resident_data_syncs_only_at_log_steps(name, config, per_call, tmp_path, monkeypatch):
  """Between an epoch's start and its end, nothing is put on the devices and the host waits
  for them (a pull or a block_until_ready) only at log steps: at most one wait per
  `log_every_steps`, at call boundaries, each at least that many steps after the last."""
  config = config()
  run = train.setup(config, str(tmp_path))
  calls = run.steps_per_epoch // run.steps.steps_per_call
  assert run.train.resident and run.steps.steps_per_call == per_call and calls >= 6  # the premise
  transfers = Transfers(monkeypatch)
  jax.device_get(run.state['step'])  # the counter counts a pull...
  run.state['step'].block_until_ready()  # ...and a wait...
  jax.device_put(np.zeros(2))        # ...and a put
  assert (transfers.pulls, transfers.waits, transfers.puts) == (1, 1, 1)
  record = Record(transfers)
  with jax.transfer_guard_host_to_device('disallow'):  # and no implicit transfer anywhere in the epoch
    train.train_epoch(run, [*actions.standard(run), record])
  run.close()
  first_step, first_log, first_syncs, first_puts = record.seen[0]
  assert first_puts - 1 == 3  # before its first step, once an epoch: its order, first step and zero sums
  assert (first_syncs > 2) == first_log
  logged, quiet = [], 0
  for (step, at_log, syncs, puts), (_, _, syncs_before, puts_before) in zip(record.seen[1:], record.seen):
    assert puts == puts_before, f'a put before step {step}'
    if at_log:
      logged.append(step)
      assert syncs > syncs_before  # the log line pulled its metrics
    else:
      quiet += 1
      assert syncs == syncs_before, f'a sync at step {step}, not a log step'
  gaps = np.diff([first_step if first_log else 0, *logged])
  assert all(gaps >= config.log_every_steps) and len(logged) <= run.steps_per_epoch // config.log_every_steps
  assert quiet >= 2 and logged  # the premise: both kinds of block were seen


@pytest.mark.parametrize('n', [1, 2, 3, 50, 1000, 65537, 70001])
def test_the_epoch_order_is_grains_shuffle(n):
  """The vectorised order is grain's own shuffle, position by position (block sizes of 16
  bits and more, a seed of 32 bits), so resumed runs of earlier releases continue exactly."""
  import grain  # pylint: disable=g-import-not-at-top
  for seed, epoch in ((0, 0), (7, 3), (2 ** 31 + 5, 11)):
    order = input_pipeline.epoch_order(n, seed, epoch)
    shuffled = grain.MapDataset.range(n).shuffle(seed=input_pipeline.hash_seed(seed, epoch))
    assert order.tolist() == [shuffled[i] for i in range(n)]
    assert len(set(order.tolist())) == (n - 1 if n == 65537 else n)  # grain's order repeats one there


def test_resident_bytes_are_counted_as_a_tpu_lays_them_out():
  """A TPU tiles the two minor dimensions (uint8: 32 x 128): the studies' 20,000 gray128
  images as (N, 128, 128, 1) would take 128 times their bytes; flat, as they lie resident,
  they take their size (and 24x24 RGB rows of 1,728 bytes pad to 1,792)."""
  n = 20000
  assert feeds.laid_out_bytes((n, 128, 128, 1), np.uint8, 'tpu') == n * 128 * 128 * 128
  assert feeds.laid_out_bytes((n, 128 * 128), np.uint8, 'tpu') == n * 128 * 128
  assert feeds.laid_out_bytes((n, 24 * 24 * 3), np.uint8, 'tpu') == n * 1792
  assert feeds.laid_out_bytes((n,), np.int32, 'tpu') == 20480 * 4
  assert feeds.resident_bytes(n, (128, 128, 1), 'gpu') == n * (128 * 128 + 4)
  assert feeds.flat({'image': np.zeros((5, 24, 24, 3), np.uint8)})['image'].shape == (5, 1728)


class Device:
  """What `memory_budget` reads of a device: its platform and JAX's memory statistics."""

  def __init__(self, platform, stats):
    self.platform, self.stats = platform, stats

  def memory_stats(self):
    return self.stats


def test_memory_budget_is_a_quarter_of_what_jax_may_allocate_and_none_when_unknown():
  assert feeds.memory_budget([Device('gpu', {'bytes_limit': 8e9}), Device('gpu', {'bytes_limit': 4e9})]) == 1e9
  assert feeds.memory_budget([Device('gpu', None)]) is None  # no limit reported: the feed streams
  assert feeds.memory_budget([Device('cpu', None)]) > 0  # CPUs: a quarter of the host's RAM
