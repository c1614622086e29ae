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


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 VALID convolution, NHWC with an HWIO kernel (what `nn.Conv` computes)."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv_max_pool(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`max_pool_2x2(conv3x3(x, kernel))` for inputs of few channels, in one pass that
  never writes the convolution's output (four times the pooled size): each pool
  window's four convolutions are broadcast multiply-adds of strided slices of `x`
  (9 per input channel, in float32), which XLA fuses with their maximum."""
  n, h, w, cin = x.shape
  ho, wo = (h - 2) // 2, (w - 2) // 2
  xf, kf = x.astype(jnp.float32), kernel.astype(jnp.float32)
  tap = lambda u, v, k: xf[:, u:u + 2 * ho:2, v:v + 2 * wo:2, k:k + 1]
  window = [sum(tap(a + i, b + j, k) * kf[i, j, k] for i in range(3) for j in range(3) for k in range(cin))
            for a in (0, 1) for b in (0, 1)]
  return jnp.maximum(jnp.maximum(window[0], window[1]), jnp.maximum(window[2], window[3])).astype(x.dtype)


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


class ConvKernel(nn.Module):
  """The kernel of a 3x3 `nn.Conv` without bias: same name, shape and initial
  values, for a convolution the caller writes itself."""
  features: int

  @nn.compact
  def __call__(self, in_features: int) -> jax.Array:
    return self.param('kernel', nn.initializers.lecun_normal(), (3, 3, in_features, self.features))


class CNN(nn.Module):
  """Conv(3x3) - MaxPool(2) - Conv(3x3) - MaxPool(2) - Flatten - Dropout - Dense(2).

  Two ways to the same function and parameters, for CPUs (`create_model` sets them):
  - `slice_images` > 0 runs the convolutions on independent slices of the batch of
    that many images each (`strided_slices`). XLA:CPU runs them side by side on all
    cores, where one convolution of the whole batch keeps about one busy, and each
    slice's activations fit in the caches.
  - `fuse_first_pool` computes the first convolution and its pool in one pass
    (`conv_max_pool`) where it does not train: on a CPU, that layer's forward pass
    runs about 4x faster than XLA's convolution and the pool. Training keeps
    XLA's convolution: the fused form with its own gradient made the train step
    no faster (docs/performance.md).
  Only float rounding differs.

  The dropout rate is an argument, not a field: it is a value of the train state
  (stacked trials differ in it), and modules equal in their fields share compiled steps.
  """
  filters_1: int = 100
  filters_2: int = 50
  input_scaling: str = 'unit'
  num_classes: int = 2
  dtype: jnp.dtype = jnp.float32  # computation; parameters stay float32
  slice_images: int = 0  # 0: the whole batch at once
  fuse_first_pool: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               dropout_rate: float | jax.Array = 0.0) -> jax.Array:
    layers, channels = [], images.shape[-1]
    for i, filters in enumerate((self.filters_1, self.filters_2)):
      kernel = ConvKernel(filters, name=f'Conv_{i}')(channels).astype(self.dtype)
      bias = self.param(f'bias_{i}', nn.initializers.zeros_init(), (filters,)).astype(self.dtype)
      fused = i == 0 and self.fuse_first_pool and not train
      layers.append((kernel, bias, conv_max_pool if fused else lambda x, k: max_pool_2x2(conv3x3(x, k))))
      channels = filters

    def features(x):
      x = scale_inputs(x, self.input_scaling, self.dtype)
      for kernel, bias, conv_pool in layers:
        # The bias and ReLU after the pool: equal to pool(relu(conv + bias)), as max
        # commutes with a per-channel constant and with ReLU, on a quarter of the values.
        x = nn.relu(conv_pool(x, kernel) + bias)
      return x.reshape(x.shape[0], -1)

    b, k = images.shape[0], self.slice_images
    if k and b > k and b % k == 0:
      x = merge_slices(jnp.stack([features(s) for s in strided_slices(images, k)]))
    else:
      x = features(images)
    if train:
      x = dropout(x, dropout_rate, self.make_rng('dropout'))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class MLP(nn.Module):
  """Flatten - (Dense - ReLU) per hidden size - Dense(2)."""
  hidden: Sequence[int] = (128, 128)
  input_scaling: str = 'imagenet'
  num_classes: int = 2
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               dropout_rate: float | jax.Array = 0.0) -> jax.Array:
    del train, dropout_rate  # no dropout in the MLP study
    x = scale_inputs(images, self.input_scaling, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {'cnn': CNN, 'mlp': MLP}


def create_model(config) -> nn.Module:
  """The module named by `config.model.name`, from its fields and `config.dtype`
  (and, for the CNN on CPUs, `config.cpu_slice_images` per device and the fused
  first layer). The dropout rate is not among them: the train step passes it (see `CNN`)."""
  fields = dict(config.model)
  name = fields.pop('name')
  fields.pop('dropout_rate', None)
  if 'hidden' in fields:
    fields['hidden'] = tuple(fields['hidden'])
  if name == 'cnn' and jax.default_backend() == 'cpu':
    fields.update(slice_images=config.cpu_slice_images * jax.device_count(), fuse_first_pool=True)
  return MODELS[name](dtype=jnp.dtype(config.dtype), **fields)
