"""The device check's smoke test: each model's steps compiled and run once on JAX's default backend.

    python -m bench.smoke            # the shipped configs (CNN, MLP, ResNet)
    python -m bench.smoke --quick    # their small forms (`:runlocal`), single only: for a CPU

For each model, single and as a stack of 2 trials (--quick: single only): init, train (a block of batches, and
gathered from a resident build), eval (likewise) and predict (single only), on random
images. One line each, with its seconds (compiles included); a failure prints its error,
the other models still run, and the exit status is 1.
"""
import argparse
import sys
import time
import traceback

from comicface import host  # XLA flags for CPUs, before JAX starts
import jax
import jax.numpy as jnp
import numpy as np

from bench.train_throughput import random_block
from comicface import feeds, input_pipeline
from comicface import steps as steps_lib
from configs import default, mlp, resnet

CONFIGS = {'cnn': default.get_config, 'mlp': mlp.get_config, 'resnet': resnet.get_config}


def run_steps(config, stacked: bool) -> None:
  """Every step of `config`'s model, built, compiled and run once; blocks until done."""
  task = input_pipeline.Task.of_name(config.dataset.name)
  trials = 2 if stacked else 1
  steps = steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                          steps_lib.make_mesh(trials), stacked)
  keys = jnp.stack([jax.random.PRNGKey(i) for i in range(trials)]) if stacked else jax.random.PRNGKey(0)
  state = steps.init(keys)
  hparams = steps.put_hparams([steps_lib.hyperparameters(config)] * trials)
  state, sums = steps.train(state, hparams, random_block(steps, config), steps.put_sums(trials))
  rng = np.random.default_rng(0)
  k, b = steps.steps_per_call, config.batch_size
  n = 2 * k * b
  replicated = lambda x: jax.device_put(x, steps.replicated)
  data = replicated(feeds.flat({'image': rng.integers(0, 256, (n, *task.image_shape), dtype=np.uint8),
                                'label': rng.integers(0, len(task.classes), n).astype(np.int32)}))
  epoch = replicated({'order': rng.permutation(n).astype(np.int32), 'first': np.asarray(0, np.int32)})
  state, sums = steps.train_resident(state, hparams, data, epoch, sums, k)
  images = steps.device_put({'x': rng.integers(0, 256, (b, *task.image_shape), dtype=np.uint8)})['x']
  out = [sums, steps.eval(state, images)]
  positions = replicated(np.arange(2 * b, dtype=np.int32).reshape(2, b))
  out.append(steps.eval_resident(state, data['image'], positions, replicated(np.asarray(0, np.int32))))
  if not stacked:
    out.append(steps.predict(state, images))
  jax.block_until_ready(out)
  if not np.isfinite(np.asarray(sums['loss'])).all():
    raise FloatingPointError(f'the training loss is not finite: {np.asarray(sums["loss"])}')


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help="the configs' small forms (:runlocal), single only")
  quick = p.parse_args().quick
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), '
        f'jax {jax.__version__}', flush=True)
  failed = []
  for name, get_config in CONFIGS.items():
    for stacked in (False,) if quick else (False, True):
      label = f'{name} {"stacked" if stacked else "single"}'
      start = time.perf_counter()
      try:
        run_steps(get_config('runlocal' if quick else ''), stacked)
        print(f'  {label:<16} ok  {time.perf_counter() - start:6.1f} s', flush=True)
      except Exception:  # pylint: disable=broad-except  # each model's failure is reported, the rest run
        failed.append(label)
        print(f'  {label:<16} FAILED after {time.perf_counter() - start:.1f} s\n{traceback.format_exc()}', flush=True)
  print(f'smoke: {"FAILED: " + ", ".join(failed) if failed else "every model ok"}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  sys.exit(main())
