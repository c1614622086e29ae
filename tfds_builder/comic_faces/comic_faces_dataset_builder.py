"""comic_faces: real face photos vs. comic drawings of the same faces (Kaggle)."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import pathlib
import zipfile
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from tfds_builder import images
from tfds_builder.images import AnyPath, LayoutError, TooManyBadImagesError, fingerprint  # noqa: F401

CLASS_NAMES = ('comic', 'face')  # face = 1: "is it a real face?"
FACE_DIRS = ('faces', 'face')    # v2 names it faces/, v1 face/
SPLIT_SHARES = (('train', 0.7), ('validation', 0.1), ('test', 0.2))
LAYOUT = ('a folder holding comics/ and faces/ (v2) or comics/ and face/ (v1), '
          'at any depth under the manual dir, or a .zip holding them '
          '(e.g. face2comics_v2.0.0_by_Sxela/face2comics_v2.0.0_by_Sxela/{comics,faces}/N.jpg)')
_MAX_DEPTH = 4


def _config(name: str, size: int, mode: str) -> images.ImagesConfig:
  colour = 'grayscale' if mode == 'L' else 'RGB'
  return images.ImagesConfig(name=name, size=size, mode=mode,
                          description=f'{colour} {size}x{size}')


@dataclasses.dataclass(frozen=True)
class Item:
  """One image file of the source, before decoding."""
  path: AnyPath
  label: int
  pair_id: str
  index_in_class: int  # position in its class folder sorted by file name

  @property
  def filename(self) -> str:
    return f'{CLASS_NAMES[self.label]}/{self.path.name}'


def split_of(pair_id: str) -> str:
  """Stable split of a pair: a face and its comic always land together."""
  u = int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], 'big') / 2**64
  for name, share in SPLIT_SHARES:
    if u < share:
      return name
    u -= share
  return SPLIT_SHARES[-1][0]


def _candidates(root: AnyPath, depth: int = 0) -> Iterator[AnyPath]:
  """Folders under `root` that hold comics/ and faces/ (or face/)."""
  names = {p.name: p for p in root.iterdir() if p.is_dir()}
  if 'comics' in names and any(f in names for f in FACE_DIRS):
    yield root
  elif depth < _MAX_DEPTH:
    for name in sorted(names):
      if not name.startswith(('.', '__MACOSX')):
        yield from _candidates(names[name], depth + 1)


def find_root(manual_dir: os.PathLike | str) -> AnyPath:
  """Returns the folder holding comics/ and faces/ (or face/); raises LayoutError.

  `manual_dir` may be that folder, any folder above it, a .zip, or a folder
  holding a .zip. Extracted folders are preferred to zips.
  """
  manual_dir = pathlib.Path(manual_dir).expanduser()
  if not manual_dir.exists():
    raise LayoutError(f'{manual_dir} does not exist. Expected {LAYOUT}.')
  if manual_dir.is_file():
    zips = [manual_dir] if zipfile.is_zipfile(manual_dir) else []
    found = []
  else:
    found = list(_candidates(manual_dir))
    zips = sorted(p for p in manual_dir.glob('*.zip') if zipfile.is_zipfile(p))
  if not found:
    for z in zips:
      found += list(_candidates(images.zip_root(z)))
      if found:
        break
  if len(found) > 1:
    raise LayoutError(f'{manual_dir} holds the dataset more than once: '
                      f'{[str(f) for f in found]}. Point the manual dir at one of them.')
  if not found:
    seen = images.listing(manual_dir) if manual_dir.is_dir() else [manual_dir.name]
    raise LayoutError(f'No dataset folders in {manual_dir}. Expected {LAYOUT}. '
                      f'Found instead: {seen[:20] or "an empty folder"}.')
  return found[0]


def list_items(root: AnyPath) -> list[Item]:
  """The image files under `root`, comics first, each class sorted by file name."""
  dirs = {p.name: p for p in root.iterdir() if p.is_dir()}
  face_dir = next(dirs[f] for f in FACE_DIRS if f in dirs)
  items = []
  for label, folder in ((0, dirs['comics']), (1, face_dir)):
    files = images.images_in(folder)
    if not files:
      raise LayoutError(f'{folder} holds no images. Expected {LAYOUT}; '
                        f'found: {images.listing(folder)[:20] or "an empty folder"}.')
    items += [Item(p, label, pathlib.PurePath(p.name).stem, i) for i, p in enumerate(files)]
  return items


class Builder(images.ImageBuilder):
  """DatasetBuilder for comic_faces: one config per stored size and colour."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      _config('gray128', 128, 'L'),  # the CNN study
      _config('rgb24', 24, 'RGB'),   # the MLP study
      _config('rgb64', 64, 'RGB'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download the Kaggle dataset "Comic faces (paired, synthetic) v2"
  (defileroff/comic-faces-paired-synthetic-v2; v1 also works) and put the zip,
  or the folder it extracts to, in the manual dir (default
  ~/tensorflow_datasets/downloads/manual/, or pass --manual_dir). Expected:
  {LAYOUT}.
  """

  @staticmethod
  def source_fingerprint(manual_dir: os.PathLike | str) -> str:
    """The fingerprint of the source files at `manual_dir` (what a build of them records)."""
    return fingerprint(list_items(find_root(manual_dir)))

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': self._image_feature(),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
            'pair_id': tfds.features.Text(),
            'filename': tfds.features.Text(),
            'index_in_class': tfds.features.Scalar(dtype=np.int32),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/datasets/defileroff/comic-faces-paired-synthetic-v2',
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_root(images.manual_dir_of(dl_manager))
    items = list_items(root)
    counts = collections.Counter((i.pair_id, i.label) for i in items)
    pairs = collections.Counter(pair for pair, _ in counts)
    unpaired = sorted(f'{CLASS_NAMES[l]}/{p}' for (p, l) in counts if pairs[p] == 1)
    if unpaired:
      logging.warning('%d images have no partner (kept): %s', len(unpaired), unpaired[:50])
    self.info.metadata.update(source=str(root), fingerprint=fingerprint(items),
                              unpaired=unpaired, bad_files={})
    by_split = collections.defaultdict(list)
    for item in items:
      by_split[split_of(item.pair_id)].append(item)
    empty = [name for name, _ in SPLIT_SHARES if not by_split[name]]
    if empty:
      raise LayoutError(f'{root} holds {len(pairs)} pairs, too few: no pair fell in split(s) {empty}. '
                        'Give it at least 25 pairs.')
    return self._decoded_splits({name: by_split[name] for name, _ in SPLIT_SHARES})

  def _example(self, item: Item, image: np.ndarray) -> dict:
    return {'image': image, 'label': item.label, 'pair_id': item.pair_id,
            'filename': item.filename, 'index_in_class': item.index_in_class}
