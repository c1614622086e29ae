"""The two studies' models, taking uint8 images and scaling them themselves.

Both are plain Linen modules whose parameters are nested dicts of arrays, so a
stack of them can be `jax.vmap`ped. Dropout is written out (not `nn.Dropout`)
so that its rate may be a traced array, one rate per stacked trial.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scale_inputs(images: jax.Array, method: str, dtype=jnp.float32) -> jax.Array:
  """uint8 images to floats: 'unit' divides by 255 (the CNN study), 'imagenet'
  subtracts the ImageNet mean and divides by its std per channel (the MLP study;
  a grey image uses the channel average)."""
  x = images.astype(jnp.float32)
  if method == 'imagenet':
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    if x.shape[-1] == 1:
      mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    # One multiply-add over each flattened image, the channel constants tiled
    # along it: XLA:CPU vectorises that long axis, not a 3-wide channel axis.
    flat = x.reshape(*x.shape[:-3], -1)
    pixels = flat.shape[-1] // x.shape[-1]
    flat = flat * jnp.tile(1.0 / (255.0 * std), pixels) + jnp.tile(-mean / std, pixels)
    x = flat.reshape(x.shape)
  elif method == 'unit':
    x = x / 255.0
  else:
    raise ValueError(f"input scaling must be 'unit' or 'imagenet', got {method!r}")
  return x.astype(dtype)


def _windows(x: jax.Array) -> jax.Array:
  """(b, h, w, c) -> (b, h/2, 2, w/2, 2, c), odd edges dropped."""
  b, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, odd edges dropped (as Keras' MaxPool2D).

  A reshape, which XLA:CPU runs much faster than `nn.max_pool`'s reduce_window,
  with its own gradient: one pass that sends each window's gradient to its
  maximum (split equally between tied maxima, as autodiff of `max` does), where
  autodiff makes several passes.
  """
  return _windows(x).max(axis=(2, 4))


def _max_pool_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array]:
  x, y = res
  b, h, w, c = x.shape
  spread = lambda t: t[:, :, None, :, None, :]
  hit = _windows(x) == spread(y)
  share = g / hit.sum(axis=(2, 4)).astype(g.dtype)  # tied maxima split the gradient
  dx = jnp.where(hit, spread(share), 0).astype(x.dtype).reshape(b, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def strided_slices(x: jax.Array, size: int) -> jax.Array:
  """(b, ...) -> (b / size, size, ...): slice i holds items i, i + b/size, ..., so
  where the batch is sharded over devices in blocks, each device keeps its own
  share of every slice. `size` must divide b."""
  return jnp.swapaxes(x.reshape(size, x.shape[0] // size, *x.shape[1:]), 0, 1)


def merge_slices(y: jax.Array) -> jax.Array:
  """The inverse of `strided_slices`: (n, size, ...) -> (n * size, ...) in batch order."""
  return jnp.swapaxes(y, 0, 1).reshape(-1, *y.shape[2:])


def dropout(x: jax.Array, rate: float | jax.Array, rng: jax.Array) -> jax.Array:
  """Inverted dropout whose `rate` may be a traced scalar."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class CNN(nn.Module):
  """Conv(3x3) - MaxPool(2) - Conv(3x3) - MaxPool(2) - Flatten - Dropout - Dense(2).

  `slice_images` > 0 runs the convolutions on independent slices of the batch of
  that many images each (`strided_slices`). XLA:CPU runs them side by side on all cores, where one
  convolution of the whole batch keeps about one busy, and each slice's
  activations fit in the caches. Same function and parameters; only the float
  rounding of the weight gradient's sum differs.
  """
  filters_1: int = 100
  filters_2: int = 50
  dropout_rate: float = 0.5
  input_scaling: str = 'unit'
  num_classes: int = 2
  dtype: jnp.dtype = jnp.float32  # computation; parameters stay float32
  slice_images: int = 0  # 0: the whole batch at once

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               dropout_rate: float | jax.Array | None = None) -> jax.Array:
    layers = []
    for i, filters in enumerate((self.filters_1, self.filters_2)):
      conv = nn.Conv(filters, (3, 3), padding='VALID', use_bias=False, dtype=self.dtype, name=f'Conv_{i}')
      layers.append((conv, self.param(f'bias_{i}', nn.initializers.zeros_init(), (filters,))))

    def features(x):
      x = scale_inputs(x, self.input_scaling, self.dtype)
      for conv, bias in layers:
        # The bias and ReLU after the pool: equal to pool(relu(conv + bias)), as max
        # commutes with a per-channel constant and with ReLU, on a quarter of the values.
        x = nn.relu(max_pool_2x2(conv(x)) + bias.astype(self.dtype))
      return x.reshape(x.shape[0], -1)

    b, k = images.shape[0], self.slice_images
    if k and b > k and b % k == 0:
      x = merge_slices(jnp.stack([features(s) for s in strided_slices(images, k)]))
    else:
      x = features(images)
    if train:
      rate = self.dropout_rate if dropout_rate is None else dropout_rate
      x = dropout(x, rate, self.make_rng('dropout'))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class MLP(nn.Module):
  """Flatten - (Dense - ReLU) per hidden size - Dense(2)."""
  hidden: Sequence[int] = (128, 128)
  input_scaling: str = 'imagenet'
  num_classes: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               dropout_rate: float | jax.Array | None = None) -> jax.Array:
    del train, dropout_rate  # no dropout in the MLP study
    x = scale_inputs(images, self.input_scaling, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {'cnn': CNN, 'mlp': MLP}


def create_model(config) -> nn.Module:
  """The module named by `config.model.name`, from its fields and `config.dtype`
  (and, for the CNN on CPUs, `config.cpu_slice_images` per device)."""
  fields = dict(config.model)
  name = fields.pop('name')
  if 'hidden' in fields:
    fields['hidden'] = tuple(fields['hidden'])
  if name == 'cnn' and jax.default_backend() == 'cpu':
    fields['slice_images'] = config.cpu_slice_images * jax.device_count()
  return MODELS[name](dtype=jnp.dtype(config.dtype), **fields)
