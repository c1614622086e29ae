"""Training and evaluation images/s of both models at the studies' batch sizes.

    python -m bench.train_throughput [--steps 30] [--dtype float32]

Times the jitted, sharded train and eval steps of comicface.train on device-resident
random batches (compilation excluded), i.e. the model's own speed, not the input pipeline's.
"""
import argparse
import time

import comicface  # noqa: F401  (XLA flags for CPUs, before JAX starts)
import jax
import numpy as np

from comicface import models, train
from configs import default, mlp


def rate(fn, n_steps: int, batch: int) -> float:
  out = fn()  # compile and warm up
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(n_steps):
    out = fn()
  jax.block_until_ready(out)
  return n_steps * batch / (time.perf_counter() - start)


def measure(config, n_steps: int) -> tuple[float, float]:
  mesh = train.make_mesh()
  steps = train.Steps(mesh)
  shape = train.image_shape(config)
  state = train.create_train_state(config, models.create_model(config), shape, mesh)
  rng = np.random.default_rng(0)
  b = config.batch_size
  batch = steps.device_put({'image': rng.integers(0, 256, (b, *shape), dtype=np.uint8),
                            'label': rng.integers(0, 2, b).astype(np.int32)})
  holder = [state]

  def train_once():
    holder[0], m = steps.train(holder[0], batch)
    return m
  eval_batch = dict(batch, mask=steps.device_put({'m': np.ones(b, np.float32)})['m'])
  return rate(train_once, n_steps, b), rate(lambda: steps.eval(holder[0], eval_batch), n_steps, b)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  a = p.parse_args()
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, dtype {a.dtype}')
  print(f'{"model":<34} {"batch":>5} {"train img/s":>12} {"eval img/s":>11}')
  for name, config in (('CNN 100/50, 128x128x1', default.get_config()),
                       ('MLP 1728-128-128-2, 24x24x3', mlp.get_config())):
    config.dtype = a.dtype
    tr, ev = measure(config, a.steps)
    print(f'{name:<34} {config.batch_size:>5} {tr:>12.1f} {ev:>11.1f}')


if __name__ == '__main__':
  main()
