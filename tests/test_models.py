"""The models: chosen by name, their fields validated, and the CPU kernels against Flax's own layers."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from comicface import cpu_kernels, errors, models
from comicface.models import layers


@pytest.mark.parametrize('name, fields, shape, parameters', [
    # the CNN study's 100/50: conv 3x3x1x100, conv 3x3x100x50, 128 -> 126 -> 63 -> 61 -> 30 px, dense
    ('cnn', dict(filters_1=100, filters_2=50), (128, 128, 1), 1000 + 45_050 + 30 * 30 * 50 * 3 + 3),
    ('mlp', dict(hidden=(128, 128)), (24, 24, 3), 1728 * 128 + 128 + 128 * 128 + 128 + 128 * 3 + 3),
    # stem 3x3x1x8 + BN; a block 8 -> 8; a block 8 -> 16 with its 1x1 projection; each conv a BN
    ('resnet', dict(widths=(8, 16)), (128, 128, 1), (72 + 16) + (2 * (576 + 16)) + (1152 + 2304 + 128 + 3 * 32) + 51),
])
def test_each_model_by_name_gives_logits_of_the_classes(name, fields, shape, parameters):
  model = models.create({'name': name, **fields}, num_classes=3)
  variables = model.init(jax.random.key(0), jnp.zeros((2, *shape), jnp.uint8))
  assert sum(x.size for x in jax.tree.leaves(variables['params'])) == parameters
  assert model.apply(variables, jnp.zeros((2, *shape), jnp.uint8)).shape == (2, 3)


@pytest.mark.parametrize('model, message', [
    ({'name': 'vit'}, r"config.model.name='vit' is invalid: must be one of \['cnn', 'mlp', 'resnet'\]"),
    ({'name': 'cnn', 'filter_1': 8}, 'config.model.filter_1 is not a field of cnn'),
    ({'name': 'cnn', 'filters_1': 8.5}, 'config.model.filters_1=8.5 is invalid: must be of type int'),
    ({'name': 'cnn', 'filters_1': True}, 'config.model.filters_1=True is invalid: must be of type int'),
    ({'name': 'cnn', 'dropout_rate': 1.0}, r'config.model.dropout_rate=1.0 is invalid: must be in \[0, 1\)'),
    ({'name': 'cnn', 'input_scaling': 'none'}, r"input_scaling='none' is invalid: must be one of \['unit', 'imagenet'\]"),
    ({'name': 'mlp', 'hidden': (128, 'x')}, 'config.model.hidden='),
    ({'name': 'mlp', 'num_classes': 3}, 'config.model.num_classes is not a field of mlp'),  # from the data
    ({'name': 'resnet', 'widths': ()}, 'config.model.widths=.* is invalid: must be widths >= 1'),
])
def test_model_fields_are_validated_from_the_module(model, message):
  with pytest.raises(errors.ConfigError, match=message):
    models.validate(model)


def test_a_model_file_declares_its_values_and_cpu_kernels():
  assert models.values({'name': 'cnn'}) == ('dropout_rate',) and models.values({'name': 'resnet'}) == ()
  fields = models.config_fields(models.load('cnn').Model)
  assert set(fields) == {'filters_1', 'filters_2', 'dropout_rate', 'input_scaling'}  # not stage, dtype


def _batch(shape=(8, 30, 30, 1), seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(0, 256, shape), jnp.uint8), jnp.asarray(rng.integers(0, 2, shape[0]))


@pytest.mark.slow
@pytest.mark.parametrize('purpose', ['train', 'predict'])
def test_cnn_on_cpu_kernels_follows_flax_layers(purpose):
  """The CPU kernels (a stage with its own pool, bias and ReLU after it; the fused first
  stage for prediction) have Flax's parameters, give its outputs, and for training ten
  SGD steps of its losses and parameters."""
  images, labels = _batch()
  config = {'name': 'cnn', 'filters_1': 6, 'filters_2': 4, 'dropout_rate': 0.0}
  plain = models.create(config, 2)
  fast = models.create(config, 2, kernels='cpu', purpose=purpose)
  params = plain.init(jax.random.key(0), images)['params']
  assert jax.tree.structure(fast.init(jax.random.key(0), images)['params']) == jax.tree.structure(params)
  params['stage_1']['Conv_0']['bias'] = jnp.linspace(-0.1, 0.1, 6)  # biases matter in the check
  np.testing.assert_allclose(fast.apply({'params': params}, images), plain.apply({'params': params}, images),
                             rtol=1e-5, atol=1e-5)
  if purpose == 'predict':
    return
  tx = optax.sgd(0.1)

  def curve(model):
    p, opt, losses = params, tx.init(params), []
    for _ in range(10):
      loss, g = jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          model.apply({'params': p}, images, train=True, rngs={'dropout': jax.random.key(1)}), labels).mean())(p)
      updates, opt = tx.update(g, opt)
      p, losses = optax.apply_updates(p, updates), losses + [float(loss)]
    return losses, p
  (fast_losses, fast_params), (plain_losses, plain_params) = curve(fast), curve(plain)
  np.testing.assert_allclose(fast_losses, plain_losses, rtol=1e-5)
  assert fast_losses[-1] < fast_losses[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), fast_params, plain_params)


@pytest.mark.parametrize('shape, ties', [((2, 8, 8, 3), False), ((2, 7, 9, 4), False),
                                         ((2, 8, 8, 3), True)])
def test_max_pool_and_its_gradient_match_autodiff(shape, ties):
  """Values as `nn.max_pool`; gradients as autodiff of the plain reshape-and-max, which
  splits a window's gradient between tied maxima."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 2, shape) if ties else rng.normal(size=shape), jnp.float32)
  np.testing.assert_array_equal(cpu_kernels.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
  b, h, w, c = shape
  plain = lambda x: x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  g = jnp.asarray(np.random.default_rng(1).normal(size=plain(x).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * g))(x)
  np.testing.assert_array_equal(grad(cpu_kernels.max_pool_2x2), grad(plain))


@pytest.mark.parametrize('shape', [(2, 12, 12, 1), (2, 13, 11, 3)])
def test_fused_conv_and_pool_match_the_convolution_then_the_pool(shape):
  """Values and (autodiff) kernel gradients, one and three input channels, odd edges."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random(shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 5)), jnp.float32)
  plain = lambda x, k: cpu_kernels.max_pool_2x2(cpu_kernels.conv3x3(x, k))
  np.testing.assert_allclose(cpu_kernels.conv_max_pool(x, kernel), plain(x, kernel), rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.normal(size=plain(x, kernel).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda k: jnp.sum(f(x, k) * g))(kernel)
  np.testing.assert_allclose(grad(cpu_kernels.conv_max_pool), grad(plain), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('channels', [3, 1])
def test_imagenet_scaling_is_per_channel_in_both_forms(channels):
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, channels), dtype=np.uint8)
  mean, std = np.asarray(layers.IMAGENET_MEAN), np.asarray(layers.IMAGENET_STD)
  if channels == 1:
    mean, std = mean.mean(), std.mean()
  want = (images / 255.0 - mean) / std
  np.testing.assert_allclose(layers.scale_inputs(images, 'imagenet'), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cpu_kernels.scale_inputs(images, 'imagenet'), want, rtol=1e-5, atol=1e-5)


def test_dropout_takes_a_traced_rate():
  """A stack of trials vmaps over dropout rates: each member drops its own share."""
  x = jnp.ones((4000,))
  drop = lambda rate: layers.Dropout(rate).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)})
  out = jax.vmap(drop)(jnp.asarray([0.0, 0.5, 0.9]))
  np.testing.assert_allclose((out == 0).mean(axis=1), [0.0, 0.5, 0.9], atol=0.03)
  np.testing.assert_allclose(out.mean(axis=1), 1.0, atol=0.1)  # inverted: the mean is kept
