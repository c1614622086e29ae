"""Layers the models share: input scaling, and dropout whose rate may be traced."""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Scaling = Literal['unit', 'imagenet']  # the type of a model's `input_scaling` field


def scale_inputs(images: jax.Array, method: str, dtype=jnp.float32) -> jax.Array:
  """uint8 images to floats: 'unit' divides by 255 (the CNN study), 'imagenet'
  subtracts the ImageNet mean and divides by its std per channel (the MLP study;
  a grey image uses the channel average)."""
  x = images.astype(jnp.float32) / 255.0
  if method == 'imagenet':
    mean, std = jnp.asarray(IMAGENET_MEAN), jnp.asarray(IMAGENET_STD)
    if x.shape[-1] == 1:
      mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    x = (x - mean) / std
  elif method != 'unit':
    raise ValueError(f"input scaling must be 'unit' or 'imagenet', got {method!r}")
  return x.astype(dtype)


class Dropout(nn.Module):
  """`nn.Dropout` whose `rate` may be a traced array: the trials of a stack differ in it
  (nn.Dropout branches on the rate's value in Python)."""
  rate: float | jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic:
      return x
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - self.rate, x.shape)
    return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)
