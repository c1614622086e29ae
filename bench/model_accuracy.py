"""Test accuracy of the models side by side: the CNN (configs/default.py) and the ResNet
(configs/resnet.py), on the generated stand-in as the configs have it and on the real
sample (../shared/real_sample, 60 pairs; there batch 8 and 10 epochs, as it is small).

    python -m bench.model_accuracy
"""
import pathlib
import tempfile

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging

from comicface import stats, train
from configs import default, resnet

REAL_SAMPLE = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'real_sample' / 'face2comics_v1.0.0_sample'


def main() -> None:
  logging.set_verbosity(logging.ERROR)
  print(f'{"data":<26} {"model":<8} {"test accuracy (95% CI)":>26} {"images":>7} {"epochs":>7}', flush=True)
  for data in ('stand-in', 'real sample'):
    if data == 'real sample' and not REAL_SAMPLE.exists():
      continue
    data_dir = tempfile.mkdtemp()
    for name, module in (('CNN', default), ('ResNet', resnet)):
      c = module.get_config()
      if data == 'real sample':
        c.dataset.manual_dir, c.dataset.data_dir = str(REAL_SAMPLE), data_dir
        c.batch_size, c.num_epochs = 8, 10
      r = train.train_and_evaluate(c, tempfile.mkdtemp())
      n = r['num_test_examples']
      lo, hi = stats.wilson_interval(round(r['test_accuracy'] * n), n)
      label = f'{data} ({c.dataset.synthetic_pairs} pairs)' if data == 'stand-in' else f'{data} (60 pairs)'
      print(f'{label:<26} {name:<8} {r["test_accuracy"]:>9.4f} ({lo:.4f}-{hi:.4f}) {n:>7} {c.num_epochs:>7}',
            flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
