"""The two feeds: a split resident on the devices trains and evaluates bitwise as the
streamed one, and an epoch on resident data moves nothing between host and device but
what its log steps pull."""
import jax
from jax._src import array as jax_array
import numpy as np
import pytest

from comicface import actions, input_pipeline, train
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
           'mlp': lambda: small(mlp.get_config('runlocal')),
           'resnet': lambda: small(resnet.get_config('runlocal'))}


@pytest.mark.parametrize('stacked', [False, True], ids=['single', 'stacked'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_resident_and_streamed_runs_are_bitwise_equal(name, stacked, tmp_path):
  """The same run fed both ways: equal parameters, optimizer and batch statistics, equal
  histories and test records (CNN, MLP, and the ResNet with batch statistics)."""
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
  `ArrayImpl._value`) and explicit puts, while the test's patches are in place."""

  def __init__(self, monkeypatch):
    self.pulls = self.puts = 0
    value = jax_array.ArrayImpl._value

    def pull(array):
      self.pulls += 1
      return value.fget(array)
    monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(pull))
    for name in ('device_put', 'make_array_from_process_local_data'):
      monkeypatch.setattr(jax, name, self._counted(getattr(jax, name)))

  def _counted(self, put):
    def counted(*args, **kwargs):
      self.puts += 1
      return put(*args, **kwargs)
    return counted


class Record(actions.Action):
  """After each block (and the standard actions), the step and the transfers so far."""

  def __init__(self, transfers):
    self.transfers, self.seen = transfers, []

  def after_steps(self, run, sums, taken):
    self.seen.append((run.step, taken, self.transfers.pulls, self.transfers.puts))


def test_an_epoch_on_resident_data_moves_nothing_between_log_steps(tmp_path, monkeypatch):
  config = tiny_config(num_epochs=2, log_every_steps=3)
  run = train.setup(config, str(tmp_path))
  assert run.train.resident and run.steps_per_epoch >= 6  # the premise: resident, several log steps
  transfers = Transfers(monkeypatch)
  jax.device_get(run.state['step'])  # the counter counts a pull...
  assert transfers.pulls == 1
  jax.device_put(np.zeros(2))        # ...and a put
  assert transfers.puts == 1
  standard = actions.standard(run)
  record = Record(transfers)
  with jax.transfer_guard_host_to_device('disallow'):  # and no implicit transfer anywhere in the epoch
    train.train_epoch(run, [*standard, record])
  run.close()
  progress = standard[0].progress
  first_step, _, first_pulls, first_puts = record.seen[0]
  assert first_puts - 1 == 3  # before its first step, once an epoch: its order, first step and zero sums
  assert first_pulls - 1 == (1 if progress.due(first_step) else 0)
  quiet = due = 0
  for (step, taken, pulls, puts), (_, _, pulls_before, puts_before) in zip(record.seen[1:], record.seen):
    assert puts == puts_before, f'a put between steps {step - taken} and {step}'
    if progress.due(step, taken):
      due += 1
      assert pulls > pulls_before  # the log line pulled its metrics
    else:
      quiet += 1
      assert pulls == pulls_before, f'a pull at step {step}, not a log step'
  assert quiet >= 3 and due >= 1  # the premise: both kinds of block were seen


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
