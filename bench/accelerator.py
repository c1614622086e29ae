"""The device check: what comicface does on this machine's accelerator, in one command.

    python -m bench.accelerator            # on a GPU or TPU: about 5 minutes at most
    python -m bench.accelerator --quick    # anywhere, smaller everything (a 2-core CPU: under 3 minutes)

On the first device of the default backend it prints:
- the device, and its measured dense matrix-multiply peak in float32 and bfloat16;
- the jitted steps alone (data already on the device): train images/s of the CNN at
  batch 32 and 256, of the CNN study's 16-trial grid (4 stacks of 4 trials), of the MLP;
  predict images/s; each step's FLOPs per image (XLA's cost analysis of the compiled
  step) and the fraction of the float32 peak it reaches;
- whole runs (`train.setup` + `train.fit` with every action: validation, checkpoints,
  TensorBoard) on a generated stand-in: images/s over the epochs after the first, the
  data resident on the device against streamed by grain, and against the step alone;
  the resident bytes per device, counted (feeds.resident_bytes) and held (measured);
- the projected time of the CNN study's full protocol (16 trials x 10 epochs, retrain,
  test) at the study's size and on all 20,000 images, from the figures above.

The machine needs the project's requirements (for a GPU: `make install ACCEL=cuda13`).
"""
import argparse
import math
import pathlib
import tempfile
import time

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bench.peak import dot_gflops
from bench.train_throughput import config_for, random_block, rate, setup, trainer
from comicface import actions, feeds, input_pipeline, search_space, synthetic, train
from comicface import steps as steps_lib
from configs import cnn_grid, default, mlp


def step_figures(config, n_steps: int, peak: float) -> dict[str, float]:
  """Train images/s of `config`'s model alone, its compiled FLOPs per image and share of `peak`
  (the FLOPs of a call of one step: XLA's cost analysis counts a loop's body once)."""
  steps, state, hparams = setup(config)
  block = random_block(steps, config)
  images = steps.steps_per_call * config.batch_size
  one_step = {k: v[:1] for k, v in block.items()}
  flops = steps.train.lower(state, hparams, one_step, steps.put_sums(1)).compile().cost_analysis()['flops']
  flops /= config.batch_size
  img_s = rate(trainer(steps, state, hparams, block), max(2, n_steps // steps.steps_per_call), images)
  return {'img_s': img_s, 'flops': flops, 'of_peak': flops * img_s / peak}


def predict_figures(config, batch: int, n_calls: int, peak: float) -> dict[str, float]:
  steps, state, _ = setup(config)
  shape = input_pipeline.Task.of_name(config.dataset.name).image_shape
  x = steps.device_put({'x': np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)})['x']
  flops = steps.predict.lower(state, x).compile().cost_analysis()['flops'] / batch
  img_s = rate(lambda: steps.predict(state, x), n_calls, batch)
  return {'img_s': img_s, 'flops': flops, 'of_peak': flops * img_s / peak}


def grid_figures(n_steps: int, variant: str) -> dict[str, float]:
  """Trial-images/s of the CNN study's 16 trials as 4 stacks of 4 (one per filter shape)."""
  trials = search_space.expand(cnn_grid.get_config(variant))
  seconds, images = 0.0, 0
  for group in search_space.groups(trials, 'stacked'):
    config = group[0].config
    task = input_pipeline.Task.of_name(config.dataset.name)
    steps = steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                            steps_lib.make_mesh(len(group)), stacked=True)
    state = steps.init(jnp.stack([jax.random.PRNGKey(i) for i in range(len(group))]))
    hparams = steps.put_hparams([steps_lib.hyperparameters(t.config) for t in group])
    per_call = steps.steps_per_call * config.batch_size
    once = trainer(steps, state, hparams, random_block(steps, config), len(group))
    img_s = rate(once, max(2, n_steps // steps.steps_per_call), per_call)
    seconds += n_steps * per_call / img_s
    images += n_steps * per_call * len(group)
  return {'img_s': images / seconds}


class EpochClock(actions.Action):
  """The time each epoch ended."""

  def __init__(self):
    self.ends = []

  def after_epoch(self, run, records):
    self.ends.append(time.perf_counter())


def run_figures(config, workdir: pathlib.Path) -> dict[str, float]:
  """Images/s of a whole run (every action) over its epochs after the first."""
  run = train.setup(config, str(workdir))
  clock = EpochClock()
  try:
    train.fit(run, [*actions.standard(run), clock])
  finally:
    run.close()
  images = (len(clock.ends) - 1) * run.steps_per_epoch * config.batch_size
  figures = {'img_s': images / (clock.ends[-1] - clock.ends[0]), 'resident': run.train.resident}
  if run.train.resident:  # the build on each device: as feeds counts it before, as the device holds it
    figures['counted'] = feeds.resident_bytes(len(run.train.split.source), run.task.image_shape,
                                              jax.devices()[0].platform)
    figures['held'] = max(feeds.device_bytes(run.train.data).values())
  return figures


def stand_in(config, root: pathlib.Path, pairs: int, size: int, epochs: int, feed: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.dataset.manual_dir, c.dataset.data_dir = str(root / f'source_{pairs}'), str(root / 'tfds')
  c.num_epochs, c.log_every_steps, c.speed.feed = epochs, 10 ** 6, feed
  if not (root / f'source_{pairs}').exists():
    synthetic.write_dataset(root / f'source_{pairs}', pairs, size=size)
  return c


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='small sizes: runs anywhere in minutes')
  a = p.parse_args()
  q = a.quick
  tfds.disable_progress_bar()
  logging.set_verbosity(logging.WARNING)
  n_steps, pairs, epochs = (2, 64, 3) if q else (200, 2000, 4)
  variant = 'runlocal' if q else ''  # --quick: the configs' small forms (the CNN's filters 8 and 8)
  cnn, mlp_config = default.get_config(variant), mlp.get_config(variant)
  device = jax.devices()[0]
  print(f'{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}'
        f'{" (--quick: small models and sizes; figures not meant to be read)" if q else ""}', flush=True)
  peak = {d: dot_gflops(512 if q else 8192, jnp.dtype(d)) * 1e9 for d in ('float32', 'bfloat16')}
  print(f'dense matmul peak: float32 {peak["float32"] / 1e12:.2f} TFLOP/s, bfloat16 '
        f'{peak["bfloat16"] / 1e12:.2f} TFLOP/s', flush=True)

  print('\nsteps alone (data on the device)', flush=True)
  rows = {'CNN train, batch 32': step_figures(config_for('cnn', 32, 'float32', 'adam', variant), n_steps,
                                              peak['float32']),
          'CNN train, batch 256': step_figures(config_for('cnn', 256, 'float32', 'adam', variant), n_steps // 2 or 1,
                                               peak['float32']),
          'MLP train, batch 64': step_figures(config_for('mlp', 64, 'float32', 'adam', variant), 10 * n_steps,
                                              peak['float32']),
          'CNN predict, batch 256': predict_figures(cnn, 256, n_steps, peak['float32']),
          'MLP predict, batch 256': predict_figures(mlp_config, 256, 10 * n_steps, peak['float32'])}
  for name, r in rows.items():
    print(f'  {name:<24} {r["img_s"]:>12,.0f} img/s  {r["flops"] / 1e6:>8.2f} MFLOP/img  '
          f'{r["of_peak"]:>6.1%} of float32 peak', flush=True)
  grid = grid_figures(n_steps, variant)
  print(f'  {"CNN grid, 16 trials":<24} {grid["img_s"]:>12,.0f} trial-img/s (4 stacks of 4)', flush=True)

  print(f'\nwhole runs on a generated stand-in ({pairs} pairs), epochs 2-{epochs}', flush=True)
  root = pathlib.Path(tempfile.mkdtemp(prefix='accelerator_'))
  runs = {}
  for name, config in (('CNN', cnn), ('MLP', mlp_config)):
    size = 64 if q or name == 'MLP' else 128
    for feed in ('resident', 'stream'):
      c = stand_in(config, root, pairs, size, epochs, feed)
      runs[name, feed] = run_figures(c, root / f'{name}_{feed}')
    step = rows[f'{name} train, batch {32 if name == "CNN" else 64}']['img_s']
    resident, streamed = runs[name, 'resident']['img_s'], runs[name, 'stream']['img_s']
    print(f'  {name}: resident {resident:,.0f} img/s, streamed {streamed:,.0f} img/s ({resident / streamed:.2f}x); '
          f'the resident run at {resident / step:.2f}x of its step alone ({step:,.0f})', flush=True)
    r = runs[name, 'resident']
    print(f'  {name}: resident data per device {r["counted"]:,} bytes counted, {r["held"]:,} held', flush=True)
  shape = (20000, 128, 128, 1)  # the studies' 20,000 images at gray128
  print('  the studies\' 20,000 gray128 images on each device, counted: '
        + ', '.join(f'{p} {feeds.resident_bytes(shape[0], shape[1:], p) / 2**20:,.0f} MiB' for p in ('gpu', 'tpu'))
        + f' (flat); a TPU would hold {feeds.laid_out_bytes(shape, np.uint8, "tpu") / 2**20:,.0f} MiB of them '
        'as (N, 128, 128, 1)', flush=True)

  print('\nthe CNN study\'s protocol, projected from the figures above', flush=True)
  single, predict = runs['CNN', 'resident']['img_s'], rows['CNN predict, batch 256']['img_s']
  for label, total in (('the study\'s 8,000 images', 8000), ('all 20,000 images', 20000)):
    train_n = int(total * 0.8 * 0.9)  # its split: 80/20 train/test, 10% of train for validation
    val_n, test_n = int(total * 0.8) - train_n, total - int(total * 0.8)
    search = 16 * 10 * train_n / (grid['img_s'] * single / rows['CNN train, batch 32']['img_s'])
    evals = 16 * 10 * val_n / predict
    retrain = 4 * train_n / single + test_n / predict
    print(f'  {label}: grid {search:,.0f} s + its validations {evals:,.0f} s + retrain and test '
          f'{retrain:,.0f} s = {math.ceil((search + evals + retrain) / 60)} min', flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
