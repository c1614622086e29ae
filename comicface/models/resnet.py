"""A small ResNet with batch normalisation: a model the studies did not have."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from comicface import models
from comicface.models import layers


class ResidualBlock(nn.Module):
  """Conv(3x3) - BN - ReLU - Conv(3x3) - BN, plus the input (projected where its shape
  changes), then ReLU."""
  features: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(self.norm()(self.conv(self.features, (3, 3), (self.strides,) * 2)(x)))
    y = self.norm(scale_init=nn.initializers.zeros_init())(self.conv(self.features, (3, 3))(y))
    if x.shape != y.shape:
      x = self.norm()(self.conv(self.features, (1, 1), (self.strides,) * 2, name='projection')(x))
    return nn.relu(x + y)


class Model(nn.Module):
  """Conv(3x3, stride 2) - BN - ReLU - MaxPool(2), then a stage of residual blocks per
  width (each stage after the first halves the size), global average pool, Dense."""
  widths: Sequence[int] = (16, 32, 64)
  blocks_per_stage: int = 1
  input_scaling: layers.Scaling = 'unit'
  num_classes: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, dtype=self.dtype)
    x = layers.scale_inputs(images, self.input_scaling, self.dtype)
    x = nn.relu(norm()(conv(self.widths[0], (3, 3), (2, 2))(x)))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    for i, width in enumerate(self.widths):
      for j in range(self.blocks_per_stage):
        x = ResidualBlock(width, 2 if i > 0 and j == 0 else 1, conv, norm)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def validate(fields: dict) -> None:
  widths = fields.get('widths', (16,))
  models.require(len(widths) > 0 and min(widths) >= 1, 'widths', widths, 'widths >= 1, at least one')
  blocks = fields.get('blocks_per_stage', 1)
  models.require(blocks >= 1, 'blocks_per_stage', blocks, '>= 1')
