"""The generic dataset path against comic_faces' own: the same images, the same model.

    python -m bench.generic_data [--pairs 2000] [--epochs 20] [--per_class 200]

- comic_faces/rgb24 on a generated stand-in against the same files laid out as a 2-class
  folder (`config.dataset.name='folder'`, 24x24 RGB, splits carved to the sizes of
  comic_faces' pair-grouped ones): both runs set up once in this process, then their epochs
  (training, validation and the standard actions, on resident data) alternate, A B then
  B A, each timed alone;
  the images/s of each (median, spread) and the ratio of each pair of epochs; then each is
  tested;
- the CNN on a generated 10-class folder at 32x32 grey (`synthetic.write_folder`): one whole
  run, its images/s over the epochs after the first (`bench.accelerator.run_figures`) and
  its test accuracy.
The first epoch of each (its compile) is not timed.
"""
import argparse
import pathlib
import statistics
import tempfile
import time

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bench.accelerator import run_figures
from comicface import actions, input_pipeline, synthetic, train
from configs import default


def cnn(epochs: int, **dataset) -> ml_collections.ConfigDict:
  config = default.get_config()
  config.num_epochs, config.log_every_steps, config.checkpoint_seconds = epochs, 10 ** 6, 10 ** 6
  config.dataset.update(dataset)
  return config


def same_splits(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, float]:
  """The carved splits' fractions that give a folder of the same images the sizes of the
  pair-grouped splits of `config`'s comic_faces build (built here)."""
  splits = input_pipeline.prepare(config, str(workdir)).info.splits
  total = sum(s.num_examples for s in splits.values())
  return {f'{name}_fraction': splits[name].num_examples / total for name in ('validation', 'test')}


def as_folder(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
  """The images of a generated comic_faces `source` as a 2-class folder (links to the same
  files), classes named as comic_faces names them."""
  for name, kind in (('face', 'faces'), ('comic', 'comics')):
    (folder / name).mkdir(parents=True)
    for path in (source / synthetic.V2_INNER / kind).iterdir():
      (folder / name / path.name).symlink_to(path)
  return folder


def alternate_epochs(runs: dict[str, train.Run], epochs: int) -> dict[str, list[float]]:
  """Images/s of each run's epochs 2 to `epochs`, the runs' epochs alternating, A B then
  B A. An epoch is what `train.fit` runs for one: training, validation, and every standard
  action after the steps and the epoch. The first epoch of each compiles and is not counted."""
  rates = {name: [] for name in runs}
  standard = {name: actions.standard(run) for name, run in runs.items()}
  for epoch in range(epochs):
    for name, run in (runs.items() if epoch % 2 == 0 else reversed(runs.items())):
      start = time.perf_counter()
      records = train.end_epoch(run, train.train_epoch(run, standard[name]))
      for action in standard[name]:
        action.after_epoch(run, records)
      if epoch:
        rates[name].append(run.steps_per_epoch * run.config.batch_size / (time.perf_counter() - start))
  for name, run in runs.items():
    for action in standard[name]:
      action.close()
    train.fit(run, [])  # its last checkpoint, which a test restores
    run.close()
  return rates


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=2000, help='pairs of the comic_faces stand-in')
  p.add_argument('--epochs', type=int, default=20, help='epochs of each of the two runs of the same images')
  p.add_argument('--per_class', type=int, default=200, help='images per class of the 10-class folder')
  a = p.parse_args()
  tfds.disable_progress_bar()
  logging.set_verbosity(logging.WARNING)
  root = pathlib.Path(tempfile.mkdtemp(prefix='generic_data_'))
  source = root / 'comic_faces'
  synthetic.write_dataset(source, a.pairs, size=96)
  folder = as_folder(source, root / 'as_folder')
  own = cnn(a.epochs, name='comic_faces/rgb24', manual_dir=str(source), data_dir=str(root / 'tfds'))
  configs = {'comic_faces/rgb24': own,
             'folder, the same images': cnn(a.epochs, name='folder', manual_dir=str(folder), image_size=24, mode='RGB',
                                            split_scheme='own', data_dir=str(root / 'tfds'),
                                            **same_splits(own, root / 'build'))}
  runs = {name: train.setup(config, str(root / name.split(',')[0].replace('/', '_'))) for name, config in configs.items()}
  for name, run in runs.items():
    print(f'{name}: {run.steps_per_epoch} steps an epoch, {run.validation.split.num_examples} validation images, '
          f'{"resident" if run.train.resident else "streamed"}', flush=True)
  rates = alternate_epochs(runs, a.epochs)
  for name, config in configs.items():
    accuracy = train.train_and_evaluate(config, str(runs[name].members[0].folder))['test_accuracy']  # only tests
    r = rates[name]
    print(f'{name}: median {statistics.median(r):,.1f} img/s over {len(r)} epochs (quartiles '
          f'{np.percentile(r, 25):,.1f} to {np.percentile(r, 75):,.1f}), test accuracy {accuracy:.4f}', flush=True)
  ratios = [folder / own for own, folder in zip(*rates.values())]
  print(f'the folder\'s epoch against the comic_faces epoch beside it: median {statistics.median(ratios):.3f} '
        f'(quartiles {np.percentile(ratios, 25):.3f} to {np.percentile(ratios, 75):.3f}, {len(ratios)} pairs)',
        flush=True)
  ten = synthetic.write_folder(root / 'ten_classes', classes=10, per_class=a.per_class, size=48)
  config = cnn(4, name='folder', manual_dir=str(ten), image_size=32, mode='L', split_scheme='own',
               data_dir=str(root / 'tfds'))
  rate = run_figures(config, root / 'ten_classes_run')['img_s']
  accuracy = train.train_and_evaluate(config, str(root / 'ten_classes_run'))['test_accuracy']
  print(f'folder, 10 classes at 32x32 grey: {rate:,.1f} img/s over epochs 2-4, test accuracy {accuracy:.4f}',
        flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
