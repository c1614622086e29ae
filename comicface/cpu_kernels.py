"""XLA:CPU speed tricks, kept out of the models: drop-in layers a model swaps in on CPUs
(its CPU_KERNELS), each computing its plain layer's function with the same parameters.

Measured in docs/performance.md ("What changed, and what each bought").
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from comicface.models import layers


def scale_inputs(images: jax.Array, method: str, dtype=jnp.float32) -> jax.Array:
  """`layers.scale_inputs`, with 'imagenet' as one multiply-add over each flattened image,
  the channel constants tiled along it: XLA:CPU vectorises that long axis, not a
  3-wide channel axis."""
  if method != 'imagenet':
    return layers.scale_inputs(images, method, dtype)
  mean, std = jnp.asarray(layers.IMAGENET_MEAN), jnp.asarray(layers.IMAGENET_STD)
  if images.shape[-1] == 1:
    mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
  flat = images.astype(jnp.float32).reshape(*images.shape[:-3], -1)
  pixels = flat.shape[-1] // images.shape[-1]
  flat = flat * jnp.tile(1.0 / (255.0 * std), pixels) + jnp.tile(-mean / std, pixels)
  return flat.reshape(images.shape).astype(dtype)


def _windows(x: jax.Array) -> jax.Array:
  """(b, h, w, c) -> (b, h/2, 2, w/2, 2, c), odd edges dropped."""
  b, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """`nn.max_pool(x, (2, 2), (2, 2))` as a reshape, which XLA:CPU runs much faster than
  reduce_window, with a one-pass gradient to each window's maximum (split equally
  between tied maxima, as autodiff of `max` does) where autodiff makes several passes."""
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


class ConvPool(nn.Module):
  """`models.cnn.ConvPool` (Conv(3x3, ReLU) - MaxPool(2)) with its parameters (its
  `nn.Conv`'s), computed as pool(conv) + bias, then ReLU: equal, as max commutes with a
  per-channel constant and with ReLU, and the bias and ReLU touch a quarter of the values.
  The pool is `max_pool_2x2`."""
  features: int
  dtype: Any = jnp.float32

  def pooled_conv(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return max_pool_2x2(conv3x3(x, kernel))

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = nn.Conv(self.features, (3, 3), padding='VALID', dtype=self.dtype, name='Conv_0')  # its auto name
    if self.is_initializing():
      conv(x)  # nn.Conv creates its parameters: names, shapes and initial values as in the plain stage
    params = self.variables['params']['Conv_0']
    kernel, bias = (params[k].astype(self.dtype) for k in ('kernel', 'bias'))
    return nn.relu(self.pooled_conv(x.astype(self.dtype), kernel) + bias)


class FusedConvPool(ConvPool):
  """`ConvPool` for inference, the convolution and its pool in one pass (`conv_max_pool`)
  where the input has few channels (the first stage). Not for training: with its own
  gradient the train step was no faster."""

  def pooled_conv(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_max_pool(x, kernel) if x.shape[-1] <= 3 else super().pooled_conv(x, kernel)
