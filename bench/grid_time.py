"""Wall time of the CNN study's 16-trial grid at a reduced scale, stacked vs sequential.

    python -m bench.grid_time [--pairs 180] [--epochs 1] [--modes stacked,sequential]

The trials phase only (no retraining), on a generated stand-in of `--pairs` pairs
(70% of them train), 128x128 grey, the study's filter counts and batch 32.
"""
import argparse
import json
import pathlib
import shutil
import tempfile
import time

from comicface import host  # XLA flags for CPUs, before JAX starts
import jax

from comicface import input_pipeline, search, search_space, synthetic
from comicface.search import plans, trials
from configs import cnn_grid


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=180)
  p.add_argument('--epochs', type=int, default=1)
  p.add_argument('--modes', default='stacked,sequential')
  p.add_argument('--json', action='store_true', help="'auto' mode only, one JSON line")
  a = p.parse_args()
  root = pathlib.Path(tempfile.mkdtemp(prefix='grid_time_'))
  synthetic.write_dataset(root / 'source', a.pairs, size=256)
  config = cnn_grid.get_config()
  config.dataset.manual_dir = str(root / 'source')
  config.dataset.data_dir = str(root / 'tfds')
  config.num_epochs = a.epochs
  config.log_every_steps = 10_000
  expanded = search_space.expand(config)
  builder = input_pipeline.prepare(config, str(root))
  task = input_pipeline.Task.of(builder)
  n = builder.info.splits['train'].num_examples
  if not a.json:
    print(f'{len(expanded)} trials x {a.epochs} epoch(s) on {n} train images, '
          f'{jax.device_count()} x {jax.devices()[0].device_kind}', flush=True)
  modes = [search.resolve_mode(config)] if a.json else a.modes.split(',')
  for mode in modes:
    start = time.perf_counter()
    plans.grid(trials.Search(config, root / mode, task, mode))
    secs = time.perf_counter() - start
    if a.json:
      print(json.dumps({'mode': mode, 'trials': len(expanded), 'images': n, 'seconds': secs}))
    else:
      print(f'{mode:<10} {secs:8.1f} s  {secs / len(expanded):6.1f} s/trial  '
            f'{len(expanded) * n * a.epochs / secs:6.1f} train img/s', flush=True)
  shutil.rmtree(root)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
