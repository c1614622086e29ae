"""Builds comic_faces without TensorFlow (array_record), from the Kaggle zip or folder.

    python -m comicface.build_dataset --manual_dir=~/Downloads/archive.zip [--configs=gray128,rgb24]
        [--data_dir=~/tensorflow_datasets] [--max_bad_fraction=0.05]

Read it back with `tfds.data_source('comic_faces/gray128', split='train', data_dir=...)`.
"""
from __future__ import annotations

import argparse
import os

import tensorflow_datasets as tfds

from tfds_builder.comic_faces import comic_faces_dataset_builder as cfb


def build(manual_dir: str, config: str, data_dir: str | None = None,
          max_bad_fraction: float | None = None) -> tfds.core.DatasetBuilder:
  """Builds (or finds built) `comic_faces/<config>`; returns its builder."""
  builder = cfb.Builder(config=config, data_dir=data_dir, max_bad_fraction=max_bad_fraction)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)),
      file_format='array_record')
  return builder


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--manual_dir', required=True, help='the Kaggle zip, or a folder holding it or its files')
  p.add_argument('--configs', default=','.join(cfb.Builder.builder_configs),
                 help=f'comma-separated, of {sorted(cfb.Builder.builder_configs)}')
  p.add_argument('--data_dir', default=None, help='default: ~/tensorflow_datasets')
  p.add_argument('--max_bad_fraction', type=float, default=None,
                 help='share of unreadable images per split above which the build fails (0.05)')
  a = p.parse_args(argv)
  for config in a.configs.split(','):
    b = build(a.manual_dir, config, a.data_dir, a.max_bad_fraction)
    sizes = {s: v.num_examples for s, v in b.info.splits.items()}
    print(f'comic_faces/{config}: {sizes} in {b.data_dir}; '
          f'{len(b.info.metadata.get("bad_files", {}))} unreadable images skipped, '
          f'{len(b.info.metadata.get("unpaired", []))} without a partner')


if __name__ == '__main__':
  main()
