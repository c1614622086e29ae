"""How hard the stand-in is at a difficulty: the CNN study's 16 settings trained a few
epochs on it, their validation accuracy per epoch, the spread after one epoch, and
whether they still improve.

    python -m bench.difficulty [--difficulty 1.0] [--pairs 500] [--epochs 3]
"""
import argparse
import pathlib
import tempfile

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging
import numpy as np

from comicface import input_pipeline, search
from comicface.search import plans, trials
from configs import cnn_grid


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--difficulty', type=float, default=1.0)
  p.add_argument('--pairs', type=int, default=500)
  p.add_argument('--epochs', type=int, default=3)
  a = p.parse_args()
  logging.set_verbosity(logging.WARNING)
  config = cnn_grid.get_config()
  config.dataset.manual_dir = ''
  config.dataset.synthetic_pairs, config.dataset.synthetic_size = a.pairs, 256
  config.dataset.synthetic_difficulty = a.difficulty
  config.num_epochs, config.log_every_steps = a.epochs, 10_000
  root = pathlib.Path(tempfile.mkdtemp(prefix='difficulty_'))
  data_config = search._one_dataset(config, str(root))  # pylint: disable=protected-access
  builder = input_pipeline.prepare(data_config, str(root))
  s = trials.Search(data_config, root, input_pipeline.Task.of(builder), 'sequential')
  plans.grid(s)
  histories = s.histories()
  print(f'difficulty {a.difficulty}: {builder.info.splits["train"].num_examples} train, '
        f'{builder.info.splits["validation"].num_examples} validation images')
  print(f'{"trial":<58}' + ''.join(f' {"epoch " + str(e + 1):>8}' for e in range(a.epochs)))
  for name, history in histories.items():
    print(f'{name:<58}' + ''.join(f' {r["val_accuracy"]:>8.4f}' for r in history))
  first = np.asarray([h[0]['val_accuracy'] for h in histories.values()])
  last = np.asarray([h[-1]['val_accuracy'] for h in histories.values()])
  best = np.asarray([max(r['val_accuracy'] for r in h) for h in histories.values()])
  print(f'after epoch 1: {first.min():.4f} to {first.max():.4f}, a spread of {100 * (first.max() - first.min()):.1f} '
        f'points; mean {first.mean():.4f} -> {last.mean():.4f} at epoch {a.epochs} (best epoch: mean {best.mean():.4f}); '
        f'{int((last > first).sum())} of {len(first)} settings better at the end')


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
