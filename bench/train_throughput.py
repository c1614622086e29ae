"""Training and prediction images/s of both models at the studies' batch sizes.

    python -m bench.train_throughput [--steps 30] [--dtype float32|bfloat16]
    python -m bench.train_throughput --json --model cnn --batch 32 [--optimizer sgd] [--dtype ...]

Times the jitted, sharded train step and the predict step of comicface.steps on
device-resident random batches (compilation excluded): the models' own speed, not
the input pipeline's. `--json` prints one line for bench/compare.py.
"""
import argparse
import json
import time
from typing import Callable

from comicface import host  # XLA flags for CPUs, before JAX starts
import jax
import numpy as np

from comicface import input_pipeline
from comicface import steps as steps_lib
from configs import default, mlp


def rate(fn, n_steps: int, batch: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  start = time.perf_counter()
  for _ in range(n_steps):
    out = fn()
  jax.block_until_ready(out)
  return n_steps * batch / (time.perf_counter() - start)


def setup(config) -> tuple[steps_lib.Steps, steps_lib.State, steps_lib.HParams]:
  """The steps, a fresh state and the values of `config`, on all devices."""
  task = input_pipeline.Task.of_name(config.dataset.name)
  steps = steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                          steps_lib.make_mesh())
  return (steps, steps.init(jax.random.PRNGKey(config.seed)),
          steps.put_hparams([steps_lib.hyperparameters(config)]))


def random_block(steps: steps_lib.Steps, config) -> dict[str, jax.Array]:
  """`steps.steps_per_call` random batches, on the devices: what one train call takes."""
  rng = np.random.default_rng(0)
  k, b = steps.steps_per_call, config.batch_size
  shape = input_pipeline.Task.of_name(config.dataset.name).image_shape
  return steps.device_put({'image': rng.integers(0, 256, (k, b, *shape), dtype=np.uint8),
                           'label': rng.integers(0, 2, (k, b)).astype(np.int32)}, block=True)


def trainer(steps: steps_lib.Steps, state: steps_lib.State, hparams: steps_lib.HParams,
            block: dict[str, jax.Array], members: int = 1) -> Callable[[], steps_lib.Metrics]:
  """A function that trains `state` (and keeps it) on `block` once per call; returns the sums."""
  holder = [state, steps.put_sums(members)]

  def once():
    holder[0], holder[1] = steps.train(holder[0], hparams, block, holder[1])
    return holder[1]
  return once


def measure(config, n_steps: int, predict_batch: int = 256) -> dict[str, float]:
  """Train and predict images/s of `config`'s model (`n_steps` steps, rounded up to whole calls)."""
  steps, state, hparams = setup(config)
  block = random_block(steps, config)
  rng = np.random.default_rng(1)
  shape = input_pipeline.Task.of_name(config.dataset.name).image_shape
  images = steps.device_put({'x': rng.integers(0, 256, (predict_batch, *shape), dtype=np.uint8)})['x']
  k = steps.steps_per_call
  train_img_s = rate(trainer(steps, state, hparams, block), -(-n_steps // k), k * config.batch_size)
  state = steps.init(jax.random.PRNGKey(config.seed))  # the trainer's was donated
  return {'train_img_s': train_img_s,
          'predict_img_s': rate(lambda: steps.predict(state, images), max(3, n_steps // 4), predict_batch)}


def config_for(model: str, batch: int, dtype: str, optimizer: str, variant: str = ''):
  """The model's shipped config (with its speed settings; `variant` 'runlocal': its small
  form), at this batch, dtype and optimizer."""
  config = (default if model == 'cnn' else mlp).get_config(variant)
  config.batch_size, config.dtype, config.optimizer = batch, dtype, optimizer
  return config


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--json', action='store_true', help='one model, one JSON line')
  p.add_argument('--model', default='cnn', choices=['cnn', 'mlp'])
  p.add_argument('--batch', type=int, default=None)
  p.add_argument('--optimizer', default='adam', choices=['adam', 'sgd'])
  a = p.parse_args()
  if a.json:
    batch = a.batch or (32 if a.model == 'cnn' else 64)
    out = measure(config_for(a.model, batch, a.dtype, a.optimizer), a.steps)
    print(json.dumps({'model': a.model, 'batch': batch, 'dtype': a.dtype, 'optimizer': a.optimizer, **out}))
    return
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, dtype {a.dtype}')
  print(f'{"model":<30} {"batch":>5} {"train img/s":>12} {"predict img/s (256)":>20}')
  for name, model, batch in (('CNN 100/50, 128x128x1', 'cnn', 32), ('CNN 100/50, 128x128x1', 'cnn', 64),
                             ('MLP 1728-128-128-2, 24x24x3', 'mlp', 64)):
    r = measure(config_for(model, batch, a.dtype, 'adam'), a.steps)
    print(f'{name:<30} {batch:>5} {r["train_img_s"]:>12.1f} {r["predict_img_s"]:>20.1f}', flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
