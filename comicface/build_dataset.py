"""Builds comic_faces without TensorFlow (array_record), from the Kaggle zip or folder; and
(`build`, from code) the project's other builders, such as a folder of class folders.

    python -m comicface.build_dataset --manual_dir=~/Downloads/archive.zip [--configs=gray128,rgb24]
        [--data_dir=~/tensorflow_datasets] [--max_bad_fraction=0.05]

Read it back with `tfds.data_source('comic_faces/gray128', split='train', data_dir=...)`.
Each build records the size and SHA-256 of its files (`manifest.json`), so that a
damaged or half-deleted build is found before training reads it.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pathlib

from absl import logging
import tensorflow_datasets as tfds

from comicface import errors
from tfds_builder import images
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces

MANIFEST = 'manifest.json'


class CorruptBuildError(errors.UserError, RuntimeError):
  """A built dataset is damaged and cannot be rebuilt from here."""


def default_data_dir() -> pathlib.Path:
  """TFDS' default data dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return pathlib.Path(tfds.core.constants.DATA_DIR).expanduser()


def build_dir(config: str | tfds.core.BuilderConfig, data_dir: str | None,
              builder: type[images.ImageBuilder] = comic_faces.Builder) -> pathlib.Path:
  """Where `<builder>/<config>` (default: comic_faces) is (or would be) built."""
  root = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
  name = config if isinstance(config, str) else config.name
  return root / builder.name / name / str(builder.VERSION)


def _files(folder: pathlib.Path) -> dict[str, dict]:
  out = {}
  for path in sorted(folder.iterdir()):
    if path.is_file() and path.name != MANIFEST:
      with path.open('rb') as f:
        out[path.name] = {'size': path.stat().st_size, 'sha256': hashlib.file_digest(f, 'sha256').hexdigest()}
  return out


_INTACT: dict[str, dict] = {}  # build folder: its files' sizes and mtimes when this process found it intact


def _stats(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
  return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def damage(folder: pathlib.Path) -> str | None:
  """What is wrong with the build in `folder` (None: intact, or not built at all). Its files
  are hashed again only where their sizes or times changed since this process last did."""
  manifest = folder / MANIFEST
  if not folder.exists():
    return None
  if not manifest.exists():
    return None if (folder / 'dataset_info.json').exists() else 'no dataset_info.json (an unfinished build)'
  if _INTACT.get(str(folder)) == _stats(folder):
    return None
  want, have = json.loads(manifest.read_text())['files'], _files(folder)
  for name, record in want.items():
    if name not in have:
      return f'{name} is missing'
    if have[name]['size'] != record['size']:
      return f'{name} is {have[name]["size"]} bytes, {record["size"]} were written'
    if have[name] != record:
      return f'{name} changed since it was written (its SHA-256 differs)'
  _INTACT[str(folder)] = _stats(folder)
  return None


def recorded_fingerprint(folder: pathlib.Path) -> str | None:
  """The source fingerprint a build recorded, even where the build is damaged."""
  for name in (MANIFEST, 'metadata.json'):
    try:
      return json.loads((folder / name).read_text())['fingerprint']
    except (OSError, ValueError, KeyError):
      continue
  return None


def set_aside(folder: pathlib.Path, why: str) -> pathlib.Path:
  """Renames a damaged build out of TFDS' way (nothing is deleted); returns its new path."""
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  aside = folder.with_name(f'{folder.name}.damaged-{stamp}')
  folder.rename(aside)
  logging.warning('The build in %s is damaged (%s): moved it to %s and rebuilding it from its '
                  'source files. Delete %s once the rebuild is done.', folder, why, aside, aside)
  return aside


def build(manual_dir: str, config: str | tfds.core.BuilderConfig, data_dir: str | None = None,
          max_bad_fraction: float | None = None,
          builder: type[images.ImageBuilder] = comic_faces.Builder) -> tfds.core.DatasetBuilder:
  """Builds (or finds built) `<builder>/<config>` (default: comic_faces); returns its builder.

  A damaged build of the same source files is set aside and rebuilt; one whose
  source files are not at `manual_dir` raises CorruptBuildError.
  """
  folder = build_dir(config, data_dir, builder)
  why = damage(folder)
  if why:
    if recorded_fingerprint(folder) not in (None, builder.source_fingerprint(os.path.expanduser(manual_dir))):
      raise CorruptBuildError(
          f'The build in {folder} is damaged ({why}), and {manual_dir} holds other source files, '
          'so it cannot be rebuilt from there. Delete that folder and rerun with the source files '
          'it was built from (or another data dir).')
    set_aside(folder, why)
  built = builder(config=config, data_dir=data_dir, max_bad_fraction=max_bad_fraction)
  built.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)),
      file_format='array_record')
  manifest = folder / MANIFEST
  if not manifest.exists():
    record = {'fingerprint': built.info.metadata.get('fingerprint'), 'files': _files(folder)}
    tmp = manifest.with_suffix('.tmp')
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(manifest)
  return built


def read_error(folder: str, error: Exception) -> CorruptBuildError:
  """The error to raise where reading a build fails (a file damaged while in use)."""
  return CorruptBuildError(f'Reading the build in {folder} failed ({error}): it is damaged. '
                           'Rerun: a damaged build is found at start and rebuilt from its source '
                           f'files (or delete {folder}).')


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--manual_dir', required=True, help='the Kaggle zip, or a folder holding it or its files')
  p.add_argument('--configs', default=','.join(comic_faces.Builder.builder_configs),
                 help=f'comma-separated, of {sorted(comic_faces.Builder.builder_configs)}')
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
