"""What the project's image builders share: every source file decoded once on all cores
by `imaging.load_image`, unreadable files skipped, counted and listed (the build failing
above `max_bad_fraction`), and the fingerprint of the source files that a build records."""
from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import zipfile
from typing import Any, Iterator, Protocol, Sequence, Union

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from comicface import errors
from comicface import imaging

# Read once at import: TFDS's builder test mocks `os` while the builder runs.
MAX_BAD_FRACTION = float(os.environ.get('COMIC_FACES_MAX_BAD_FRACTION', 0.05))
_THREADS = os.cpu_count()

AnyPath = Union[pathlib.Path, zipfile.Path]


class LayoutError(errors.UserError, FileNotFoundError):
  """The manual dir does not hold the dataset's folders."""


class TooManyBadImagesError(errors.UserError, RuntimeError):
  """More than the allowed share of images could not be decoded."""


@dataclasses.dataclass
class ImagesConfig(tfds.core.BuilderConfig):
  """One stored form of a source's images: side length and colour mode ('L' or 'RGB')."""
  size: int = 128
  mode: str = 'L'


class Item(Protocol):
  """One image file of a source, before decoding."""
  path: AnyPath

  @property
  def filename(self) -> str: ...


def listing(folder: AnyPath) -> list[str]:
  return sorted(p.name for p in folder.iterdir())


def visible(folder: AnyPath) -> dict[str, AnyPath]:
  """The sub-folders of `folder` by name, but hidden ones and macOS' __MACOSX."""
  return {p.name: p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(('.', '__MACOSX'))}


def images_in(folder: AnyPath) -> list[AnyPath]:
  """The image files directly in `folder`, sorted by name."""
  return sorted((p for p in folder.iterdir() if imaging.is_image_name(p.name)), key=lambda p: p.name)


def zip_root(path: pathlib.Path) -> zipfile.Path:
  """The root of the zip at `path`, read in place."""
  return zipfile.Path(zipfile.ZipFile(path))


def fingerprint(items: Sequence[Item]) -> str:
  """A digest of the source's file names and sizes: which data a build came from."""
  h = hashlib.sha256()
  for item in items:
    size = item.path.stat().st_size if isinstance(item.path, pathlib.Path) else (
        item.path.root.getinfo(item.path.at).file_size)
    h.update(f'{item.filename}\0{size}\n'.encode())
  return h.hexdigest()


def manual_dir_of(dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
  """The manual dir as given: TFDS refuses a .zip given as the manual dir, and answers a
  missing or empty folder with a generic AssertionError; the builders explain what they expected."""
  try:
    return pathlib.Path(dl_manager.manual_dir)
  except (AssertionError, OSError):
    return pathlib.Path(dl_manager._manual_dir)  # pylint: disable=protected-access


class ImageBuilder(tfds.core.GeneratorBasedBuilder):
  """A builder of images decoded at `size` in `mode` (its config's), one split per list of
  items, in their order; an item's example is `_example(item, image)`."""

  def __init__(self, *, max_bad_fraction: float | None = None, **kwargs):
    """`max_bad_fraction`: share of undecodable images in a split above which the build fails.

    Defaults to $COMIC_FACES_MAX_BAD_FRACTION, else 0.05.
    """
    super().__init__(**kwargs)
    self.max_bad_fraction = MAX_BAD_FRACTION if max_bad_fraction is None else max_bad_fraction

  @staticmethod
  @abc.abstractmethod
  def source_fingerprint(manual_dir: os.PathLike | str) -> str:
    """The fingerprint of the source files at `manual_dir` (what a build of them records)."""

  @abc.abstractmethod
  def _example(self, item: Any, image: np.ndarray) -> dict[str, Any]:
    """The features of `item`, whose decoded pixels are `image`."""

  def _image_feature(self) -> tfds.features.Tensor:
    """Raw pixels, not PNG: nothing to encode at build time or decode in training."""
    c = self.builder_config
    return tfds.features.Tensor(shape=(c.size, c.size, 1 if c.mode == 'L' else 3),
                                dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)

  def _decoded_splits(self, by_split: dict[str, list]) -> dict[str, Iterator]:
    """The generator of each split's examples. One pool decodes every split, all cores
    busy, also while TFDS writes the previous split; each split reads its results in input
    order (deterministic)."""
    c = self.builder_config
    pool = concurrent.futures.ThreadPoolExecutor(_THREADS)
    futures = {name: [pool.submit(_try, _decode, it, c.size, c.mode) for it in items]
               for name, items in by_split.items()}
    last = list(by_split)[-1]
    return {name: self._generate_examples(name, items, futures[name], pool, name == last)
            for name, items in by_split.items()}

  def _generate_examples(self, split: str, items: list, futures: list,
                         pool: concurrent.futures.Executor, last: bool):
    finished = False
    try:
      bad = {}
      for item, future in zip(items, futures):
        image, error = future.result()
        if error:
          logging.warning('Skipping unreadable %s: %s', item.filename, error)
          bad[item.filename] = error
          continue
        yield item.filename, self._example(item, image)
      self.info.metadata['bad_files'].update(bad)
      logging.info('%s: %d images written, %d skipped as unreadable.',
                   split, len(items) - len(bad), len(bad))
      if items and len(bad) > self.max_bad_fraction * len(items):
        raise TooManyBadImagesError(
            f'{len(bad)} of {len(items)} images in split {split!r} are unreadable, more than '
            f'max_bad_fraction={self.max_bad_fraction:g}: {sorted(bad.items())[:20]}. Check the '
            'files, or raise the limit (config.dataset.max_bad_fraction, or $COMIC_FACES_MAX_BAD_FRACTION).')
      finished = True
    finally:
      if last or not finished:  # done, failed, or abandoned: stop decoding
        pool.shutdown(wait=False, cancel_futures=True)


def _decode(item: Item, size: int, mode: str) -> np.ndarray:
  return imaging.load_image(item.path.read_bytes(), size, mode)


def _try(fn, *args):
  try:
    return fn(*args), None
  except (imaging.ImageError, OSError) as e:
    return None, str(e)
