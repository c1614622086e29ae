"""The generic dataset path against comic_faces' own: the same images, the same model.

    python -m bench.generic_data [--pairs 1000] [--rounds 2] [--epochs 4]

- comic_faces/rgb24 on a generated stand-in against the same files laid out as a 2-class
  folder (`config.dataset.name='folder'`, 24x24 RGB, splits carved to the sizes of
  comic_faces' pair-grouped ones): the CNN's images/s over the epochs after the first
  (training and validation: `bench.accelerator.run_figures`), the order of the cases
  reversed every other round, and each one's test accuracy;
- the CNN on a generated 10-class folder at 32x32 grey (`synthetic.write_folder`): its
  test accuracy and images/s.
The rates leave out each build and compile: they are read over the epochs after the first.
"""
import argparse
import pathlib
import statistics
import tempfile

from comicface import host  # XLA flags for CPUs, before JAX starts
from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from bench.accelerator import run_figures
from comicface import input_pipeline, synthetic, train
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


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=1000, help='pairs of the comic_faces stand-in')
  p.add_argument('--per_class', type=int, default=200, help='images per class of the 10-class folder')
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--epochs', type=int, default=4)
  a = p.parse_args()
  tfds.disable_progress_bar()
  logging.set_verbosity(logging.WARNING)
  root = pathlib.Path(tempfile.mkdtemp(prefix='generic_data_'))
  source = root / 'comic_faces'
  synthetic.write_dataset(source, a.pairs, size=96)
  folder = root / 'as_folder'  # the same files, one folder per class
  for name, kind in (('face', 'faces'), ('comic', 'comics')):
    (folder / name).mkdir(parents=True)
    for path in (source / synthetic.V2_INNER / kind).iterdir():
      (folder / name / path.name).symlink_to(path)
  ten = synthetic.write_folder(root / 'ten_classes', classes=10, per_class=a.per_class, size=48)
  own = cnn(a.epochs, name='comic_faces/rgb24', manual_dir=str(source), data_dir=str(root / 'tfds'))
  cases = {
      'comic_faces/rgb24': own,
      'folder, the same images at 24x24 RGB': cnn(a.epochs, name='folder', manual_dir=str(folder), image_size=24,
                                                  mode='RGB', split_scheme='own', data_dir=str(root / 'tfds'),
                                                  **same_splits(own, root / 'build')),
      'folder, 10 classes at 32x32 grey': cnn(a.epochs, name='folder', manual_dir=str(ten), image_size=32, mode='L',
                                              split_scheme='own', data_dir=str(root / 'tfds')),
  }
  figures = {name: [] for name in cases}
  for i in range(a.rounds):
    for name, config in (cases.items() if i % 2 == 0 else reversed(cases.items())):  # A B, then B A
      workdir = root / f'{len(figures[name])}_{name.replace("/", "_").replace(" ", "_")}'
      rate = run_figures(config, workdir)['img_s']
      accuracy = train.train_and_evaluate(config, str(workdir))['test_accuracy']  # finished: it only tests
      figures[name].append((rate, accuracy))
      print(f'round {i + 1}: {name}: {rate:,.1f} img/s, test accuracy {accuracy:.4f}', flush=True)
  medians = {name: statistics.median(r for r, _ in rows) for name, rows in figures.items()}
  base, same = list(medians)[:2]
  for name, rate in medians.items():
    print(f'{name}: median {rate:,.1f} img/s', flush=True)
  print(f'the generic path on the same images: {medians[same] / medians[base]:.2f}x comic_faces\' own', flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
