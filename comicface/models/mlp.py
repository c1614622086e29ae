"""The MLP study's network, on 24x24 RGB images."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from comicface import cpu_kernels
from comicface import models
from comicface.models import layers


class Model(nn.Module):
  """Flatten - (Dense - ReLU) per hidden width - Dense(2): 1728-128-128-2 at 24x24x3."""
  hidden: Sequence[int] = (128, 128)
  input_scaling: layers.Scaling = 'imagenet'
  num_classes: int = 2
  dtype: Any = jnp.float32
  scale: Any = layers.scale_inputs  # cpu_kernels swaps in its own on CPUs

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout in the MLP study
    x = self.scale(images, self.input_scaling, self.dtype)
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


CPU_KERNELS = {purpose: {'scale': cpu_kernels.scale_inputs} for purpose in ('train', 'predict')}


def validate(fields: dict) -> None:
  hidden = fields.get('hidden', (128,))
  models.require(len(hidden) > 0 and min(hidden) >= 1, 'hidden', hidden, 'widths >= 1, at least one')
