"""The CNN study's network, on 128x128 grey images."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from comicface import cpu_kernels
from comicface import models
from comicface.models import layers


class ConvPool(nn.Module):
  """Conv(3x3, ReLU) - MaxPool(2): one stage, as Keras' Conv2D(activation='relu') + MaxPool2D."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), padding='VALID', dtype=self.dtype)(x)
    return nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))


class Model(nn.Module):
  """Conv(3x3) - MaxPool(2) - Conv(3x3) - MaxPool(2) - Flatten - Dropout - Dense(2)."""
  filters_1: int = 100
  filters_2: int = 50
  dropout_rate: float = 0.5
  input_scaling: layers.Scaling = 'unit'
  num_classes: int = 2
  dtype: Any = jnp.float32
  stage: Any = ConvPool  # a conv-and-pool stage; cpu_kernels swaps in its own on CPUs

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    x = layers.scale_inputs(images, self.input_scaling, self.dtype)
    x = self.stage(self.filters_1, dtype=self.dtype, name='stage_1')(x)
    x = self.stage(self.filters_2, dtype=self.dtype, name='stage_2')(x)
    x = x.reshape(x.shape[0], -1)
    x = layers.Dropout(self.dropout_rate)(x, deterministic=not train)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


VALUES = ('dropout_rate',)
CPU_KERNELS = {'train': {'stage': cpu_kernels.ConvPool}, 'predict': {'stage': cpu_kernels.FusedConvPool}}


def validate(fields: dict) -> None:
  for name in ('filters_1', 'filters_2'):
    models.require(fields.get(name, 1) >= 1, name, fields.get(name), '>= 1')
  rate = fields.get('dropout_rate', 0.0)
  models.require(0 <= rate < 1, 'dropout_rate', rate, 'in [0, 1)')
