"""Test accuracy in float32 and in bfloat16 mixed precision, on the generated stand-in
and on the real sample (../shared/real_sample, where present).

    python -m bench.precision_accuracy [--epochs 6]
"""
import argparse
import pathlib
import tempfile

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging

from comicface import train
from configs import default

REAL_SAMPLE = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'real_sample' / 'face2comics_v1.0.0_sample'


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--epochs', type=int, default=6)
  a = p.parse_args()
  logging.set_verbosity(logging.ERROR)
  sources = {'stand-in (200 pairs)': ''} | ({'real sample (60 pairs)': str(REAL_SAMPLE)}
                                            if REAL_SAMPLE.exists() else {})
  print(f'{"data":<24} {"dtype":<9} {"test accuracy":>13} {"test loss":>10} {"images":>7}')
  for name, manual_dir in sources.items():
    data_dir = tempfile.mkdtemp()
    for dtype in ('float32', 'bfloat16'):
      c = default.get_config('runlocal')
      c.dataset.manual_dir, c.dataset.data_dir = manual_dir, data_dir
      c.dataset.synthetic_pairs = 200
      c.model.filters_1, c.model.filters_2 = 32, 16
      c.num_epochs, c.dtype = a.epochs, dtype
      r = train.train_and_evaluate(c, tempfile.mkdtemp())
      print(f'{name:<24} {dtype:<9} {r["test_accuracy"]:>13.4f} {r["test_loss"]:>10.4f} '
            f'{r["num_test_examples"]:>7}', flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
