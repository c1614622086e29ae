"""The models' fast paths against the plain formulations they replace."""
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from comicface import models


@pytest.mark.parametrize('shape, ties', [((2, 8, 8, 3), False), ((2, 7, 9, 4), False),
                                         ((2, 8, 8, 3), True)])
def test_max_pool_and_its_gradient_match_autodiff(shape, ties):
  """Values as `nn.max_pool`; gradients as autodiff of the plain reshape-and-max, which
  splits a window's gradient between tied maxima."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 2, shape) if ties else rng.normal(size=shape), jnp.float32)
  np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
  b, h, w, c = shape
  plain = lambda x: x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
  g = jnp.asarray(np.random.default_rng(1).normal(size=plain(x).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * g))(x)
  np.testing.assert_array_equal(grad(models.max_pool_2x2), grad(plain))


def plain_cnn(params, images):
  """The CNN study's layer order with Flax's own pooling: pool(relu(conv + bias))."""
  x = models.scale_inputs(images, 'unit')
  for i in (0, 1):
    x = lax.conv_general_dilated(x, params[f'Conv_{i}']['kernel'], (1, 1), 'VALID',
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = nn.max_pool(nn.relu(x + params[f'bias_{i}']), (2, 2), (2, 2))
  d = params['Dense_0']
  return x.reshape(x.shape[0], -1) @ d['kernel'] + d['bias']


def _convolutions(model, params, images) -> int:
  jaxpr = jax.make_jaxpr(lambda p: model.apply({'params': p}, images))(params)
  return str(jaxpr).count('conv_general_dilated')


@pytest.mark.parametrize('slice_images, convolutions', [(0, 2), (2, 8), (3, 2)])
def test_cnn_follows_the_plain_loss_curve(slice_images, convolutions):
  """Ten SGD steps of the CNN give the plain formulation's losses and parameters, also
  with its convolutions on slices of the batch (8 images: 4 slices of 2; 3 does not
  divide 8, so the whole batch)."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (8, 30, 30, 1)), jnp.uint8)
  labels = jnp.asarray(rng.integers(0, 2, 8))
  model = models.CNN(filters_1=6, filters_2=4, slice_images=slice_images)
  params = model.init(jax.random.key(0), images)['params']
  params['bias_0'] = jnp.linspace(-0.1, 0.1, 6)  # biases matter in the check
  assert _convolutions(model, params, images) == convolutions
  tx = optax.sgd(0.1)

  def curve(forward):
    p, opt, losses = params, tx.init(params), []
    for _ in range(10):
      loss, g = jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          forward(p, images), labels).mean())(p)
      updates, opt = tx.update(g, opt)
      p, losses = optax.apply_updates(p, updates), losses + [float(loss)]
    return losses, p
  fast, fast_params = curve(lambda p, x: model.apply({'params': p}, x))
  plain, plain_params = curve(plain_cnn)
  np.testing.assert_allclose(fast, plain, rtol=1e-5)
  assert fast[-1] < fast[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               fast_params, plain_params)


@pytest.mark.parametrize('shape', [(2, 12, 12, 1), (2, 13, 11, 3)])
def test_fused_conv_and_pool_match_the_convolution_then_the_pool(shape):
  """Values and (autodiff) kernel gradients, one and three input channels, odd edges."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random(shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 5)), jnp.float32)
  plain = lambda x, k: models.max_pool_2x2(models.conv3x3(x, k))
  np.testing.assert_allclose(models.conv_max_pool(x, kernel), plain(x, kernel), rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.normal(size=plain(x, kernel).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda k: jnp.sum(f(x, k) * g))(kernel)
  np.testing.assert_allclose(grad(models.conv_max_pool), grad(plain), rtol=1e-4, atol=1e-4)


def test_cnn_predicts_the_same_with_its_first_layer_fused():
  """Inference fuses the first convolution with its pool (one convolution left in the
  program); training keeps both convolutions (their gradients); same outputs."""
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 30, 30, 1)), jnp.uint8)
  plain, fused = models.CNN(filters_1=6, filters_2=4), models.CNN(filters_1=6, filters_2=4, fuse_first_pool=True)
  params = plain.init(jax.random.key(0), images)['params']
  params['bias_0'] = jnp.linspace(-0.1, 0.1, 6)
  np.testing.assert_allclose(fused.apply({'params': params}, images), plain.apply({'params': params}, images),
                             rtol=1e-5, atol=1e-5)
  assert _convolutions(fused, params, images) == 1 and _convolutions(plain, params, images) == 2
  train = lambda m: jax.make_jaxpr(lambda p: m.apply({'params': p}, images, train=True, dropout_rate=0.5,
                                                     rngs={'dropout': jax.random.key(1)}))(params)
  assert str(train(fused)).count('conv_general_dilated') == 2


def test_imagenet_scaling_is_per_channel():
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  want = (images / 255.0 - models.IMAGENET_MEAN) / models.IMAGENET_STD
  np.testing.assert_allclose(models.scale_inputs(images, 'imagenet'), want, rtol=1e-5, atol=1e-5)
  grey = images[..., :1]
  want = (grey / 255.0 - np.mean(models.IMAGENET_MEAN)) / np.mean(models.IMAGENET_STD)
  np.testing.assert_allclose(models.scale_inputs(grey, 'imagenet'), want, rtol=1e-5, atol=1e-5)
