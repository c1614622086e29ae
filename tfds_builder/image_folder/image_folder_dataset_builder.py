"""image_folder: any folder (or zip) of class folders, decoded once into raw pixels.

    DIR/<class>/*.{jpg,png,...}                           one split, 'train'
    DIR/train/<class>/*, DIR/test/<class>/* [, DIR/validation/<class>/*]   its own splits

Class names are the class folders' names (every split's, sorted); label i is the i-th.
A folder holding a single folder (and no images), as a zip often does, is looked into.
Each source folder and setting is a config of its own (`folder_config`), so that builds
of two folders never share a data dir's folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from tfds_builder import images
from tfds_builder.images import AnyPath, LayoutError

SPLIT_NAMES = ('train', 'validation', 'test')  # the split folders a source may have
LAYOUT = ('a folder (or a .zip of one) of class folders, DIR/<class>/<image>, or with its own splits, '
          'DIR/train/<class>/<image> and DIR/test/<class>/<image> (and optionally DIR/validation/<class>/)')
_MAX_DEPTH = 4


@dataclasses.dataclass
class FolderConfig(images.ImagesConfig):
  """One source folder stored at one side length and colour mode, with its class names."""
  classes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Item:
  """One image file of the source, before decoding."""
  path: AnyPath
  label: int
  filename: str  # relative to the source's root: '<class>/<file>', or '<split>/<class>/<file>'


def find_root(manual_dir: os.PathLike | str) -> AnyPath:
  """The folder of class folders (or of split folders) at `manual_dir` (a folder or a .zip);
  raises LayoutError."""
  path = pathlib.Path(manual_dir).expanduser()
  if not path.exists():
    raise LayoutError(f'{path} does not exist. Expected {LAYOUT}.')
  root = images.zip_root(path) if path.is_file() and zipfile.is_zipfile(path) else path
  if not root.is_dir():
    raise LayoutError(f'{path} is neither a folder nor a .zip. Expected {LAYOUT}.')
  for _ in range(_MAX_DEPTH):
    inside = images.visible(root)
    if len(inside) != 1 or images.images_in(root):
      break
    root = next(iter(inside.values()))
  return root


def has_own_splits(root: AnyPath) -> bool:
  """Whether the source is split in folders of its own (train/, test/, ...)."""
  inside = images.visible(root)
  return 'train' in inside and set(inside) <= set(SPLIT_NAMES)


def split_folders(root: AnyPath) -> dict[str, AnyPath]:
  """The source's split folders by split name: its own, else the root as 'train'."""
  if has_own_splits(root):
    return {name: root / name for name in SPLIT_NAMES if name in images.visible(root)}
  return {'train': root}


def class_names(root: AnyPath) -> tuple[str, ...]:
  """The class folders' names (of every split), sorted; raises LayoutError for fewer than two."""
  names = sorted({name for folder in split_folders(root).values()
                  for name, sub in images.visible(folder).items() if images.images_in(sub)})
  if len(names) < 2:
    raise LayoutError(f'{root} holds {len(names)} class folder(s) with images: {names}; a classifier needs '
                      f'at least 2. Expected {LAYOUT}; found: {images.listing(root)[:20] or "an empty folder"}.')
  return tuple(names)


def list_items(root: AnyPath) -> dict[str, list[Item]]:
  """The image files of each split, class by class, each class sorted by file name."""
  own = has_own_splits(root)
  label = {name: i for i, name in enumerate(class_names(root))}
  out = {}
  for split, folder in split_folders(root).items():
    prefix = f'{split}/' if own else ''
    out[split] = [Item(p, label[name], f'{prefix}{name}/{p.name}')
                  for name, sub in sorted(images.visible(folder).items()) if name in label
                  for p in images.images_in(sub)]
  return out


def folder_config(manual_dir: os.PathLike | str, size: int, mode: str) -> FolderConfig:
  """The config of the source at `manual_dir` at `size` in `mode`: named after the folder,
  its absolute path and the setting, with the class names read off its folders."""
  path = pathlib.Path(manual_dir).expanduser().absolute()
  slug = re.sub(r'[^a-z0-9]+', '_', path.stem.lower()).strip('_')[:40] or 'data'
  digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
  colour = 'gray' if mode == 'L' else 'rgb'
  return FolderConfig(name=f'{slug}_{digest}_{colour}{size}', size=size, mode=mode,
                      classes=class_names(find_root(path)),
                      description=f'{path} as {colour} {size}x{size}')


class Builder(images.ImageBuilder):
  """DatasetBuilder of a folder of class folders: one config per source folder and setting
  (`folder_config`), given to the constructor."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Put {LAYOUT} in the manual dir (config.dataset.manual_dir).'

  @staticmethod
  def source_fingerprint(manual_dir: os.PathLike | str) -> str:
    """The fingerprint of the source files at `manual_dir` (what a build of them records)."""
    return images.fingerprint([i for items in list_items(find_root(manual_dir)).values() for i in items])

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': self._image_feature(),
            'label': tfds.features.ClassLabel(names=self.builder_config.classes),
            'filename': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_root(images.manual_dir_of(dl_manager))
    found = class_names(root)
    if found != tuple(self.builder_config.classes):
      raise LayoutError(f'{root} holds the classes {list(found)}, not those of this build\'s config '
                        f'{list(self.builder_config.classes)}: its folders changed while it was read.')
    by_split = {name: items for name, items in list_items(root).items() if items}
    self.info.metadata.update(source=str(root), bad_files={},
                              fingerprint=images.fingerprint([i for items in by_split.values() for i in items]))
    return self._decoded_splits(by_split)

  def _example(self, item: Item, image: np.ndarray) -> dict:
    return {'image': image, 'label': item.label, 'filename': item.filename}
