"""The pure steps and their jitted forms: blocks of steps, slices of the batch, chunks of a
prediction and stacks of trials each compute what the plain step does."""
import jax
import numpy as np
import pytest

from comicface import input_pipeline
from comicface import steps as steps_lib
from conftest import override, tiny_config
from configs import mlp, repro_mlp_study, resnet


def make(config, trials: int = 1, stacked: bool = False, devices=None):
  task = input_pipeline.Task.of_name(config.dataset.name)
  return steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                         steps_lib.make_mesh(trials, devices), stacked)


def random_batches(config, n: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  b = config.batch_size
  return {'image': rng.integers(0, 256, (n, b, *input_pipeline.Task.of_name(config.dataset.name).image_shape), dtype=np.uint8),
          'label': rng.integers(0, 2, (n, b)).astype(np.int32)}


def train_over(steps, config, host, cuts, hparams=None):
  """Trains a fresh state over `host` batches in calls of the blocks between `cuts`."""
  state = steps.init(jax.random.PRNGKey(config.seed))
  hparams = hparams or steps.put_hparams([steps_lib.hyperparameters(config)])
  sums = steps.put_sums(1)
  for lo, hi in zip(cuts, cuts[1:]):
    state, sums = steps.train(state, hparams, steps.device_put({k: v[lo:hi] for k, v in host.items()}, block=True),
                              sums)
  return jax.device_get(state), jax.device_get(sums)


def train_stacked(configs, host):
  """A stack of `configs` (one trial each) trained over `host` batches, a step a call."""
  stack = make(configs[0], trials=len(configs), stacked=True)
  state = stack.init(np.stack([jax.random.PRNGKey(c.seed) for c in configs]))
  hparams = stack.put_hparams([steps_lib.hyperparameters(c) for c in configs])
  sums = stack.put_sums(len(configs))
  for i in range(len(host['label'])):
    state, sums = stack.train(state, hparams, stack.device_put({k: v[i:i + 1] for k, v in host.items()}, block=True),
                              sums)
  return jax.device_get(state), jax.device_get(sums)


def assert_close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.slow  # compiles several steps of each kind
@pytest.mark.parametrize('config', [tiny_config(), mlp.get_config('runlocal'), resnet.get_config('runlocal')],
                         ids=['cnn', 'mlp', 'resnet'])
def test_blocks_of_steps_match_single_steps(config):
  """A call running 3 + 2 steps (a lax.scan) ends where 5 one-step calls do, batch
  statistics included."""
  steps, host = make(config), random_batches(config, 5)
  (state_1, sums_1), (state_2, sums_2) = (train_over(steps, config, host, cuts)
                                          for cuts in ((0, 1, 2, 3, 4, 5), (0, 3, 5)))
  assert int(state_1['step']) == int(state_2['step']) == 5
  assert_close(state_1, state_2)
  assert_close(sums_1, sums_2)


@pytest.mark.slow  # compiles several steps of each kind
def test_slices_of_the_batch_train_and_predict_as_the_whole_batch():
  """The CNN on slices of 2 images gives the whole batch's loss and parameters (dropout
  included: each example draws its own mask), and its predictions."""
  whole, sliced = (tiny_config(**{'speed.cpu_slice_images': k}) for k in (0, 2))
  assert steps_lib.resolve_kernels('auto') == 'cpu'  # the premise: slicing is on (CPU kernels)
  host = random_batches(whole, 2)
  (state_w, sums_w), (state_s, sums_s) = (train_over(make(c), c, host, (0, 1, 2)) for c in (whole, sliced))
  assert_close(sums_w, sums_s)
  assert_close(state_w['params'], state_s['params'], rtol=1e-4)
  images = host['image'][0]
  probs = [make(c).predict(state_w, jax.device_put(images, make(c).data)) for c in (whole, sliced)]
  np.testing.assert_allclose(probs[0], probs[1], rtol=1e-5, atol=1e-6)


def test_a_prediction_in_chunks_matches_one_pass():
  whole, chunked = make(override(tiny_config(), **{'speed.predict_chunk': 0})), make(tiny_config())
  state = whole.init(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).integers(0, 256, (64, 128, 128, 1), dtype=np.uint8)
  probs = whole.predict(state, jax.device_put(images, whole.data))
  assert probs.shape == (64, 2)
  np.testing.assert_allclose(chunked.predict(state, jax.device_put(images, chunked.data)), probs,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_stack_of_trials_trains_each_as_alone():
  """Three trials differing in learning and dropout rates, stacked, end where each trial's
  own run ends (same batches, same initial parameters)."""
  configs = [tiny_config(learning_rate=lr, **{'model.dropout_rate': d})
             for lr, d in ((1e-2, 0.0), (3e-3, 0.5), (1e-3, 0.2))]
  host = random_batches(configs[0], 3)
  state, sums = train_stacked(configs, host)
  for t, c in enumerate(configs):
    alone, alone_sums = train_over(make(c), c, host, (0, 1, 2, 3))
    assert_close(jax.tree.map(lambda x: x[t], state), alone, rtol=1e-4, atol=1e-5)
    assert_close({k: v[t] for k, v in sums.items()}, alone_sums, rtol=1e-4)


def test_flip_lr_mirrors_images_and_nothing_else():
  """With no dropout (the MLP), a flip only matters for images that are not mirror-symmetric."""
  rng = np.random.default_rng(0)
  half = rng.integers(0, 256, (1, 16, 24, 12, 3), dtype=np.uint8)
  symmetric = np.concatenate([half, half[:, :, :, ::-1]], axis=3)
  asymmetric = rng.integers(0, 256, (1, 16, 24, 24, 3), dtype=np.uint8)
  labels = rng.integers(0, 2, (1, 16)).astype(np.int32)

  def params_after(images, augment):
    c = override(repro_mlp_study.get_config(), augment=augment, batch_size=16)
    return jax.tree.leaves(train_over(make(c), c, {'image': images, 'label': labels}, (0, 1))[0]['params'])
  assert repro_mlp_study.get_config().augment == 'flip_lr'
  for a, b in zip(params_after(symmetric, 'flip_lr'), params_after(symmetric, '')):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert any(not np.allclose(a, b) for a, b in zip(params_after(asymmetric, 'flip_lr'),
                                                   params_after(asymmetric, '')))


def test_the_average_of_the_parameters_follows_its_recurrence_and_is_what_evaluation_uses():
  """ema_0 = the initial parameters, ema_k = d ema_(k-1) + (1 - d) params_k after each step;
  evaluation and prediction use it."""
  config = tiny_config(ema_decay=0.8)
  steps, host = make(config), random_batches(config, 3)
  state = steps.init(jax.random.PRNGKey(0))
  hparams, sums = steps.put_hparams([steps_lib.hyperparameters(config)]), steps.put_sums(1)
  ema = jax.device_get(state['params'])
  jax.tree.map(np.testing.assert_array_equal, ema, jax.device_get(state['ema_params']))
  for i in range(3):
    state, sums = steps.train(state, hparams, steps.device_put({k: v[i:i + 1] for k, v in host.items()}, block=True),
                              sums)
    ema = jax.tree.map(lambda e, p: 0.8 * e + 0.2 * p, ema, jax.device_get(state['params']))
    assert_close(jax.device_get(state['ema_params']), ema)
  images = jax.device_put(host['image'][0], steps.data)
  plain = {k: v for k, v in state.items() if k != 'ema_params'}
  averaged, raw = ({**plain, 'params': p} for p in (state['ema_params'], state['params']))
  without_average, evaluated = make(tiny_config()), steps.eval(state, images)
  np.testing.assert_array_equal(evaluated, without_average.eval(averaged, images))
  assert not np.allclose(evaluated, without_average.eval(raw, images))
  np.testing.assert_allclose(steps.predict(state, images), without_average.predict(averaged, images), rtol=1e-6)


@pytest.mark.slow  # compiles several steps of each kind
def test_a_stack_of_trials_differing_in_ema_decay_trains_each_as_alone():
  configs = [tiny_config(ema_decay=d) for d in (0.5, 0.9)]
  host = random_batches(configs[0], 2)
  state, _ = train_stacked(configs, host)
  for t, c in enumerate(configs):
    assert_close(jax.tree.map(lambda x: x[t], state)['ema_params'], train_over(make(c), c, host, (0, 1, 2))[0]['ema_params'],
                 rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # compiles several steps of each kind
@pytest.mark.parametrize('accumulate', [2, 4])
def test_accumulating_micro_batches_equals_one_batch(accumulate):
  """SGD without dropout: k micro-batches of b/k give the update, and the sums, of one batch of b."""
  whole, parts = (tiny_config(optimizer='sgd', grad_accum_steps=k, **{'model.dropout_rate': 0.0})
                  for k in (1, accumulate))
  host = random_batches(whole, 2)
  (state_w, sums_w), (state_p, sums_p) = (train_over(make(c), c, host, (0, 1, 2)) for c in (whole, parts))
  assert make(parts).eval_batch == make(whole).eval_batch // accumulate
  assert not np.allclose(jax.tree.leaves(state_w['params'])[0], jax.tree.leaves(steps_init(whole)['params'])[0])
  assert_close(state_w['params'], state_p['params'], rtol=1e-5, atol=1e-6)
  assert_close(sums_w, sums_p, rtol=1e-5)


def steps_init(config):
  return jax.device_get(make(config).init(jax.random.PRNGKey(config.seed)))
