"""Dataset preparation and batches: grain over the TFDS array_record data source.

Batches are built from global indices, so every process sees the same global
batch whatever the process and device counts: each epoch's permutation of
`range(N)` is seeded by `(seed, epoch)`, cut into global batches, and each
process reads only its own slice of each batch. A batch is therefore a pure
function of `(seed, epoch, step)`, which is what makes resume exact.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Iterator, Sequence

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from comicface import build_dataset
from comicface import configuration
from comicface import errors
from comicface import imaging
from comicface import synthetic
from comicface import workdir as workdirs
from comicface import splits
from tfds_builder import images
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces
from tfds_builder.image_folder import image_folder_dataset_builder as image_folder

Batch = dict[str, np.ndarray]


class SourceMismatchError(errors.UserError, RuntimeError):
  """A built dataset exists, but from another source than the config names."""


class PrepareError(errors.UserError, RuntimeError):
  """A TFDS dataset is not prepared, and cannot be prepared here."""


FOLDER = 'folder'  # config.dataset.name of a folder of class folders


def kind(dataset_name: str) -> str:
  """'comic_faces', 'folder' or 'tfds': which source config.dataset.name names. The one
  place that tells them apart."""
  if dataset_name.split('/')[0] == 'comic_faces':
    return 'comic_faces'
  return 'folder' if dataset_name == FOLDER else 'tfds'


def builder_config(dataset_name: str) -> images.ImagesConfig:
  """The comic_faces builder config named by 'comic_faces/<config>'."""
  name, _, config = dataset_name.partition('/')
  configs = comic_faces.Builder.builder_configs
  if name != 'comic_faces' or config not in configs:
    raise errors.ConfigError(f'config.dataset.name={dataset_name!r} is not one of '
                     f'{["comic_faces/" + c for c in configs]}')
  return configs[config]


def image_setting(ds: ml_collections.ConfigDict, native: tuple | None = None) -> tuple[int, str]:
  """(side, mode) of the images config.dataset asks for: its image_size and mode, where
  0 and '' take the dataset's own (comic_faces: its config's; a TFDS dataset: its images'
  `native` shape where it is one square size; a folder: RGB, its size must be given)."""
  if kind(ds.name) == 'comic_faces':
    c = builder_config(ds.name)
    if ds.image_size not in (0, c.size) or ds.mode not in ('', c.mode):
      raise errors.ConfigError(f'config.dataset.name={ds.name!r} is {c.size}x{c.size} {c.mode}: leave '
                               'config.dataset.image_size=0 and mode=\'\' (or name another comic_faces config).')
    return c.size, c.mode
  if kind(ds.name) == 'folder':
    if ds.image_size <= 0:
      raise errors.ConfigError("config.dataset.image_size=0 is invalid: must be > 0 for config.dataset.name='folder'.")
    return ds.image_size, ds.mode or 'RGB'
  height, width, channels = native
  if not ds.image_size and (height is None or height != width):
    raise errors.ConfigError(f'config.dataset.image_size=0 is invalid for {ds.name!r}, whose images are '
                             f'{height or "any"}x{width or "any"}: give the side to resize them to.')
  return ds.image_size or height, ds.mode or ('L' if channels == 1 else 'RGB')


def _stand_in_dir(ds: ml_collections.ConfigDict, workdir: str, name: str) -> pathlib.Path:
  """The stand-in's folder in the workdir: one per generator setting."""
  hard = f'_difficulty{ds.synthetic_difficulty:g}' if ds.synthetic_difficulty else ''
  return pathlib.Path(workdir).absolute() / f'{name}_{ds.synthetic_pairs}x{ds.synthetic_size}_seed{ds.synthetic_seed}{hard}'


def source_dirs(ds: ml_collections.ConfigDict, workdir: str) -> tuple[pathlib.Path, str | None, bool]:
  """(manual_dir, data_dir, is_stand_in) for the config. A TFDS dataset's manual dir is
  where TFDS looks for manual downloads, its data dir where TFDS prepares it."""
  if kind(ds.name) == 'tfds':
    data_dir = pathlib.Path(ds.data_dir).expanduser() if ds.data_dir else build_dataset.default_data_dir()
    manual = pathlib.Path(ds.manual_dir).expanduser() if ds.manual_dir else data_dir / 'downloads' / 'manual'
    return manual, str(data_dir), False
  if ds.manual_dir:
    return pathlib.Path(ds.manual_dir).expanduser(), ds.data_dir or None, False
  # The stand-in and its build live together, one folder per generator setting.
  name = f'standin_{ds.synthetic_classes}classes' if kind(ds.name) == 'folder' else 'standin'
  root = _stand_in_dir(ds, workdir, name)
  return root, ds.data_dir or str(root / 'tfds'), True


def _write_stand_in(ds: ml_collections.ConfigDict, root: pathlib.Path) -> None:
  """Generates the stand-in of config.dataset in `root`, unless it is there."""
  logging.warning('*' * 72 + '\n  config.dataset.manual_dir is empty: using a GENERATED STAND-IN\n'
                  '  (%d synthetic %s in %s), not real data.\n' + '*' * 72, ds.synthetic_pairs,
                  'pairs' if kind(ds.name) == 'comic_faces' else f'images per class of {ds.synthetic_classes}', root)
  if kind(ds.name) == 'folder':
    last = root / synthetic.class_name(ds.synthetic_classes - 1, ds.synthetic_classes)
    if not last.exists() or len(list(last.iterdir())) < ds.synthetic_pairs:
      synthetic.write_folder(root, ds.synthetic_classes, ds.synthetic_pairs, ds.synthetic_size, ds.synthetic_seed)
  elif not (root / synthetic.V2_INNER / 'comics' / f'{ds.synthetic_pairs - 1}.jpg').exists():
    synthetic.write_dataset(root, ds.synthetic_pairs, ds.synthetic_size, ds.synthetic_seed,
                            difficulty=ds.synthetic_difficulty)


def _builder_of(ds: ml_collections.ConfigDict, manual_dir: pathlib.Path) -> tuple[type, Any]:
  """The builder class and config of a comic_faces or folder dataset."""
  size, mode = image_setting(ds)
  if kind(ds.name) == 'folder':
    return image_folder.Builder, image_folder.folder_config(manual_dir, size, mode)
  return comic_faces.Builder, builder_config(ds.name).name


def source_fingerprint(ds: ml_collections.ConfigDict, manual_dir: os.PathLike | str) -> str:
  """The fingerprint of the source files at `manual_dir` of a comic_faces or folder dataset
  (what a build of them records)."""
  return (image_folder.Builder if kind(ds.name) == 'folder' else comic_faces.Builder).source_fingerprint(manual_dir)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> Dataset:
  """Returns the built dataset of `config.dataset`, building it on first use, and its
  splits as the config reads them (recorded in the workdir where carved: `SPLITS_FILE`).

  With no `manual_dir`, a synthetic stand-in is generated in the workdir first.
  A build is reused only if it came from the same source files (fingerprint).
  Process 0 builds first; the others then find the build (shared disk) or make
  their own (local disks).
  """
  ds = config.dataset
  manual_dir, data_dir, stand_in = source_dirs(ds, workdir)
  source = None  # (builder class, config) of a comic_faces or folder source, once its files are there
  if kind(ds.name) == 'tfds':
    lock = pathlib.Path(data_dir) / ds.name.split('/')[0]
  elif stand_in:
    lock = manual_dir
  else:
    source = _builder_of(ds, manual_dir)
    lock = build_dataset.build_dir(source[1], data_dir, source[0]).parent
  for turn in range(2):
    if (jax.process_index() == 0) == (turn == 0):
      lock.mkdir(parents=True, exist_ok=True)
      with workdirs.exclusive(lock / '.prepare.lock'):  # jobs sharing the folder build it once
        if stand_in:
          _write_stand_in(ds, manual_dir)
        if kind(ds.name) == 'tfds':
          builder = _prepare_tfds(ds, manual_dir, data_dir)
        else:
          builder = _build(ds, manual_dir, data_dir, *(source or _builder_of(ds, manual_dir)))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'comicface dataset prepared, turn {turn}')
  dataset = Dataset(builder, ds)
  configuration.check_records(config, dataset.task.classes)
  if ds.split_scheme == 'own':
    dataset.parts.update(_recorded_parts(dataset, pathlib.Path(workdir)))
  return dataset


def _build(ds, manual_dir: pathlib.Path, data_dir: str | None, builder_cls: type,
           builder_cfg: Any) -> tfds.core.DatasetBuilder:
  current = source_fingerprint(ds, manual_dir)
  builder = build_dataset.build(str(manual_dir), builder_cfg, data_dir, ds.max_bad_fraction,
                                builder_cls)  # a no-op when built before
  if builder.info.metadata.get('fingerprint') != current:
    raise SourceMismatchError(
        f'{builder.data_dir} holds {ds.name} built from {builder.info.metadata.get("source")}, '
        f'but the config points at {manual_dir}, whose files differ. Use another '
        '--config.dataset.data_dir, or delete that build to rebuild it.')
  bad = builder.info.metadata.get('bad_files', {})
  if bad:
    logging.warning('%d unreadable source images were skipped at build time: %s',
                    len(bad), sorted(bad)[:10])
  return builder


def _tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.ConfigError(
        f'config.dataset.name={name!r} is invalid: neither a comic_faces config '
        f'({["comic_faces/" + c for c in comic_faces.Builder.builder_configs]}), {FOLDER!r} (a folder of '
        f'class folders), nor a registered TFDS dataset ({str(e).splitlines()[0]}).') from e


def _prepare_tfds(ds, manual_dir: pathlib.Path, data_dir: str) -> tfds.core.DatasetBuilder:
  """The TFDS dataset `ds.name` in `data_dir`, prepared there (as array_record) where it is not."""
  builder = _tfds_builder(ds.name, data_dir)
  if builder.is_prepared():
    return builder
  elsewhere = (f'`tfds build {ds.name} --file_format=array_record --data_dir={data_dir}` where it works '
               '(with TensorFlow: pip install tensorflow-cpu), and copy that data dir here')
  try:
    builder.download_and_prepare(file_format='array_record', download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir)))
  except ImportError as e:  # TFDS' message holds the whole example: its last line names the module
    raise PrepareError(f'Preparing the TFDS dataset {ds.name!r} in {data_dir} needs a module this machine lacks '
                       f'({str(e).strip().splitlines()[-1]}): pip install tensorflow-cpu (or the module named) '
                       f'and rerun, or prepare it with {elsewhere}.') from e
  except (OSError, AssertionError) as e:
    raise PrepareError(f'Preparing the TFDS dataset {ds.name!r} in {data_dir} needs a download (or manual files '
                       f'in {manual_dir}) that failed here ({str(e).strip().splitlines()[0][:300]}): prepare it '
                       f'with {elsewhere}.') from e
  return builder


@dataclasses.dataclass(frozen=True)
class Task:
  """What the data asks of a model: its class names (label i is classes[i]) and image shape."""
  classes: tuple[str, ...]
  image_shape: tuple[int, int, int]

  @classmethod
  def of(cls, dataset: Dataset | tfds.core.DatasetBuilder) -> Task:
    """The task of a prepared dataset, or of a build of comic_faces or of a folder."""
    if isinstance(dataset, Dataset):
      return dataset.task
    features = dataset.info.features
    return cls(tuple(features['label'].names), tuple(features['image'].shape))

  @classmethod
  def of_name(cls, dataset_name: str) -> Task:
    """The task of 'comic_faces/<config>' read off its builder config, without a build (for
    benchmarks and tests; runs take it from the build)."""
    c = builder_config(dataset_name)
    return cls(comic_faces.CLASS_NAMES, (c.size, c.size, 1 if c.mode == 'L' else 3))

  @classmethod
  def of_config(cls, ds: ml_collections.ConfigDict) -> Task | None:
    """The task of config.dataset where it is known before the build: comic_faces', a
    folder's (its class folders' names), a prepared TFDS dataset's; else None."""
    if kind(ds.name) == 'comic_faces':
      image_setting(ds)
      return cls.of_name(ds.name)
    if kind(ds.name) == 'folder':
      size, mode = image_setting(ds)
      n = ds.synthetic_classes
      classes = (image_folder.class_names(image_folder.find_root(ds.manual_dir)) if ds.manual_dir
                 else tuple(synthetic.class_name(c, n) for c in range(n)))
      return cls(classes, (size, size, 1 if mode == 'L' else 3))
    builder = _tfds_builder(ds.name, ds.data_dir or None)
    return Dataset(builder, ds).task if builder.is_prepared() else None

  @property
  def image_mode(self) -> str:
    """The colour mode of `imaging.load_image` that gives this shape."""
    return 'L' if self.image_shape[-1] == 1 else 'RGB'


class _Converted:
  """A TFDS data source's records as the models read them: `image` (from its image key,
  resized to `shape` where it differs), `label` (from its label key) and `filename`."""

  def __init__(self, source: Any, image_key: str, label_key: str, shape: tuple[int, int, int]):
    self.source, self.image_key, self.label_key, self.shape = source, image_key, label_key, shape
    self.dataset_info = source.dataset_info

  def __len__(self) -> int:
    return len(self.source)

  def __getitems__(self, rows: Sequence[int]) -> list[dict]:
    return [self._convert(r, i) for r, i in zip(self.source.__getitems__(rows), rows)]

  def __getitem__(self, row: int) -> dict:
    return self.__getitems__([row])[0]

  def _convert(self, record: dict, row: int) -> dict:
    image = np.asarray(record[self.image_key])
    if image.shape != self.shape:
      image = imaging.load_image(image, self.shape[0], 'L' if self.shape[-1] == 1 else 'RGB')
    name = next((record[k] for k in ('filename', 'image/filename', 'id') if k in record), f'#{row}'.encode())
    return {'image': image, 'label': record[self.label_key], 'filename': name}


class Dataset:
  """A prepared dataset: its build (`builder`, a TFDS DatasetBuilder), the task it poses,
  and how config.dataset (`config`) reads it: its image and label keys, image size and mode,
  and its splits (`parts`: positions in the whole build, filled by `prepare` for 'own')."""

  def __init__(self, builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict):
    self.builder, self.config = builder, config
    self.from_tfds = kind(config.name) == 'tfds'
    self.parts: dict[str, np.ndarray] = {}
    features = builder.info.features
    image_key, label_key = (config.image_key, config.label_key) if self.from_tfds else ('image', 'label')
    for key in (image_key, label_key):
      if key not in features:
        raise errors.ConfigError(f'{config.name!r} has no feature {key!r}: its features are {list(features)}; '
                                 'set config.dataset.image_key and label_key.')
    if not isinstance(features[label_key], tfds.features.ClassLabel):
      raise errors.ConfigError(f'the feature {label_key!r} of {config.name!r} is no class label: set config.dataset.label_key.')
    shape = tuple(features[image_key].shape)
    if self.from_tfds:
      size, mode = image_setting(config, shape)
      shape = (size, size, 1 if mode == 'L' else 3)
    self.task = Task(tuple(features[label_key].names), shape)
    self.keys = (image_key, label_key)

  @property
  def data_dir(self) -> str:
    return self.builder.data_dir

  @property
  def info(self) -> tfds.core.DatasetInfo:
    return self.builder.info

  def as_data_source(self, split: str) -> Any:
    return self.builder.as_data_source(split)

  @property
  def build_key(self) -> str:
    """What tells this dataset's reading apart: its build's folder, and for a TFDS dataset its keys and shape."""
    return f'{self.data_dir}:{":".join(self.keys)}:{self.task.image_shape}' if self.from_tfds else str(self.data_dir)


SPLITS = ('train', 'validation', 'test')  # the splits a run reads; a build's whole source reads them first, in this order
SPLITS_FILE = 'splits.json'  # in a workdir: the positions of the splits carved for it (scheme 'own')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split (or several read as one) of a build, read by position: example i is
  `source[index[i]]`, where `source` reads the whole build (every split, in SPLITS order)."""
  source: Any  # a TFDS ArrayRecordDataSource over the whole build (`_whole`; a TFDS dataset's `_Converted`)
  global_batch: int
  index: np.ndarray  # the split's positions in the whole build
  build: str = ''  # the build's folder: splits of one build share `source`

  @property
  def num_examples(self) -> int:
    return len(self.index)

  @property
  def local_batch(self) -> int:
    return self.global_batch // jax.process_count()

  def whole(self) -> Split:
    """Every example of the build, in the whole source's order."""
    return dataclasses.replace(self, index=np.arange(len(self.source)))

  def records(self, positions: Sequence[int]) -> list[dict]:
    """The examples at `positions` of this split; a damaged file raises CorruptBuildError."""
    rows = [int(i) for i in self.index[np.asarray(positions, int)]]
    try:
      return self.source.__getitems__(rows)
    except RuntimeError as e:  # array_record reports damage (a bad hash, a short file) so
      raise build_dataset.read_error(str(self.source.dataset_info.data_dir), e) from e

  def labels(self) -> np.ndarray:
    """The label of every example, in split order."""
    n = self.num_examples
    return np.asarray([r['label'] for i in range(0, n, 1024) for r in self.records(range(i, min(i + 1024, n)))])

  def record(self, i: int) -> dict:
    return self.records([i])[0]

  def arrays(self) -> Batch:
    """Every example's image and label, in split order (read by several threads)."""
    n, chunk = self.num_examples, 1024
    read = lambda start: self._stack(self.records(range(start, min(start + chunk, n))))
    parts = list(grain.MapDataset.range(0, n, chunk).map(read).to_iter_dataset(_read_options()))
    return {k: np.concatenate([p[k] for p in parts]) for k in ('image', 'label')}

  @staticmethod
  def _stack(records: list[dict]) -> Batch:
    return {'image': np.stack([r['image'] for r in records]),
            'label': np.asarray([r['label'] for r in records], np.int32)}

  def _read(self, positions: np.ndarray) -> Batch:
    """Reads this process's slice of a global batch of positions."""
    p = jax.process_index()
    return self._stack(self.records(positions[p * self.local_batch:(p + 1) * self.local_batch]))


_SCHEMES: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (build folder, scheme): its splits


def _positions(builder: tfds.core.DatasetBuilder, source: Any, scheme: str) -> dict[str, np.ndarray]:
  """The positions of each split of comic_faces' `scheme` in the whole build: the builder's
  own splits for 'pairs'; the others computed once per build and scheme in a process
  (reading every example)."""
  if scheme == 'pairs':
    ends = np.cumsum([builder.info.splits[s].num_examples for s in SPLITS])
    return {s: np.arange(end - builder.info.splits[s].num_examples, end) for s, end in zip(SPLITS, ends)}
  key = (str(builder.data_dir), scheme)
  if key not in _SCHEMES:
    whole = Split(source, 1, np.arange(len(source)))
    meta = [whole.records(range(i, min(i + 1024, len(source)))) for i in range(0, len(source), 1024)]
    labels = np.asarray([r['label'] for chunk in meta for r in chunk])
    index = np.asarray([r['index_in_class'] for chunk in meta for r in chunk])
    _SCHEMES[key] = splits.COMPUTED[scheme](labels, index)
  return _SCHEMES[key]


def build_splits(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The splits of a build in the order its whole source reads them: those of SPLITS it has, then its others."""
  have = list(builder.info.splits)
  return [s for s in SPLITS if s in have] + sorted(s for s in have if s not in SPLITS)


def _whole(builder: tfds.core.DatasetBuilder) -> Any:
  """The data source of every split of `builder`, in `build_splits` order."""
  try:
    return builder.as_data_source('+'.join(build_splits(builder)))
  except (ValueError, NotImplementedError) as e:
    raise PrepareError(f'{builder.data_dir} cannot be read by position ({str(e).splitlines()[0]}): prepare it '
                       'as array_record (`tfds build NAME --file_format=array_record`), or delete it and rerun '
                       'to prepare it here.') from e


def _own_positions(dataset: Dataset) -> dict[str, np.ndarray]:
  """The positions of each of SPLITS in the whole build: config.dataset.splits' TFDS split
  strings where given; else the build's own splits, a validation and test split it lacks
  carved from its training split (`splits.carve`: stratified, seeded)."""
  ds, infos = dataset.config, dataset.info.splits
  order = build_splits(dataset.builder)
  sizes = [infos[s].num_examples for s in order]
  start = dict(zip(order, np.cumsum([0] + sizes[:-1])))
  if ds.splits:
    out = {}
    for name in SPLITS:
      try:
        parts = tfds.core.ReadInstruction.from_spec(ds.splits[name]).to_absolute(infos)
      except (ValueError, KeyError, AssertionError) as e:
        raise errors.ConfigError(f'config.dataset.splits.{name}={ds.splits[name]!r} is invalid for {ds.name!r}, '
                                 f'whose splits are {dict(zip(order, sizes))}: {e}') from e
      out[name] = np.concatenate([start[i.splitname] + np.arange(infos[i.splitname].num_examples)[i.from_:i.to]
                                  for i in parts])  # (None: the split's start or end)
    return out
  own = {s: np.arange(start[s], start[s] + infos[s].num_examples) for s in SPLITS if s in infos}
  if 'train' not in own:
    raise errors.ConfigError(f'{ds.name!r} has no train split (its splits: {dict(zip(order, sizes))}): name the '
                             "splits to read in config.dataset.splits, e.g. {'train': 'NAME[:80%]', "
                             "'validation': 'NAME[80%:90%]', 'test': 'NAME[90%:]'}.")
  missing = {name: ds[f'{name}_fraction'] for name in ('test', 'validation') if name not in own}
  if missing:
    raw = _whole(dataset.builder)  # its labels without converting its images
    rows = [int(i) for i in own['train']]
    labels = np.asarray([r[dataset.keys[1]] for i in range(0, len(rows), 1024)
                         for r in raw.__getitems__(rows[i:i + 1024])])
    own.update({name: own['train'][index] for name, index in splits.carve(labels, missing, ds.split_seed).items()})
  return own


def _source_id(dataset: Dataset) -> str:
  """Which data a build holds: its source's fingerprint, or a TFDS dataset's name, version and split sizes."""
  info = dataset.info
  return (info.metadata or {}).get('fingerprint') or (
      f'{info.full_name} {sorted((s, v.num_examples) for s, v in info.splits.items())}')


def _recorded_parts(dataset: Dataset, workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """The 'own' splits of `dataset` as the workdir's SPLITS_FILE records them for this build
  and setting; where it has none, computed (`_own_positions`) and recorded there."""
  ds, path = dataset.config, workdir / SPLITS_FILE
  settings = json.loads(json.dumps({k: ds[k].to_dict() if k == 'splits' else ds[k] for k in
                                    ('splits', 'validation_fraction', 'test_fraction', 'split_seed')}))
  record = json.loads(path.read_text()) if path.exists() else None
  if record and (record['source'], record['settings']) == (_source_id(dataset), settings):
    return {name: np.asarray(v, np.int64) for name, v in record['splits'].items()}
  parts = _own_positions(dataset)
  if record:
    logging.warning('%s records the splits of another build or setting; reading this one\'s own (%s).',
                    path, {k: len(v) for k, v in parts.items()})
  elif jax.process_index() == 0:
    workdirs.write_json(path, {'dataset': ds.name, 'source': _source_id(dataset), 'settings': settings,
                               'splits': {name: v.tolist() for name, v in parts.items()}})
  return parts


def open_split(dataset: Dataset | tfds.core.DatasetBuilder, split: str | Sequence[str], global_batch: int,
               scheme: str = 'pairs') -> Split:
  """`split` may be several ('train', 'validation') read as one. `scheme` 'own' reads the
  splits of a prepared `dataset` (`prepare`); comic_faces' 'pairs' is its builder's own
  pair-grouped split, and the studies' schemes are computed at load time."""
  names = [split] if isinstance(split, str) else list(split)
  prepared = isinstance(dataset, Dataset)
  builder = dataset.builder if prepared else dataset
  source = _whole(builder)
  if prepared and dataset.from_tfds:
    source = _Converted(source, *dataset.keys, dataset.task.image_shape)
  if scheme == 'own':
    if not dataset.parts:
      dataset.parts.update(_own_positions(dataset))
    parts = dataset.parts
  else:
    parts = _positions(builder, source, scheme)
  return Split(source, global_batch, np.concatenate([parts[n] for n in names]),
               dataset.build_key if prepared else str(builder.data_dir))


def _read_options() -> grain.ReadOptions:
  """Half the machine's cores read (at most 16): the other half runs the steps."""
  return grain.ReadOptions(num_threads=max(1, min(16, (os.cpu_count() or 2) // 2)), prefetch_buffer_size=4)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The positions of a split in the order epoch `epoch` visits them, whether the data is
  streamed or resident on the devices: grain's shuffle (`MapDataset.shuffle`, the order
  of every earlier release of comicface) seeded by (seed, epoch), computed for all
  positions at once (grain computes one position per call: 60 times slower). Like grain's,
  it is a permutation but for 2^k + 1 examples (k >= 16), where one position repeats."""
  if num_examples == 1:
    return np.zeros(1, np.int32)
  last = num_examples - 1
  bits = max(2 * math.ceil(math.ceil(math.log2(last)) / 2) if last > 1 else 0, 16)
  word, mask = bits // 2, np.uint64((1 << (bits // 2)) - 1)
  keys = [np.uint64(k) & mask for k in _seed_sequence(hash_seed(seed, epoch), 4)]
  rotate = lambda x, r: ((x << np.uint64(r)) | (x >> np.uint64(word - r))) & mask
  mix = lambda x: (rotate(x, 1) & rotate(x, 8)) ^ rotate(x, 2)
  values = np.arange(1 << bits, dtype=np.uint64)
  left, right = values >> np.uint64(word), values & mask
  for i in range(0, len(keys), 2):  # grain's Simon cipher, of every value of its block at once
    left = left ^ mix(right) ^ keys[i]
    right = right ^ mix(left) ^ keys[i + 1]
  cipher = (left << np.uint64(word)) | right
  order = cipher[np.arange(num_examples) & ((1 << bits) - 1)]  # a position past the block wraps, as in grain
  pending = np.flatnonzero(order > last)
  while pending.size:  # cycle-walking: encrypt again until the value is a position
    order[pending] = cipher[order[pending]]
    pending = pending[order[pending] > last]
  return order.astype(np.int32)


def _seed_sequence(seed: int, n: int) -> list[int]:
  """C++'s `std::seed_seq{seed}.generate(n values)`, which grain's shuffle keys its rounds with."""
  out, m32 = [0x8B8B8B8B] * n, 0xFFFFFFFF
  t = 11 if n >= 623 else 7 if n >= 68 else 5 if n >= 39 else 3 if n >= 7 else (n - 1) // 2
  p, q, mix = (n - t) // 2, (n - t) // 2 + t, lambda x: x ^ (x >> 27)
  for k in range(max(2, n)):
    r1 = 1664525 * mix(out[k % n] ^ out[(k + p) % n] ^ out[(k - 1) % n]) & m32
    r2 = r1 + (1 if k == 0 else k % n + seed if k == 1 else k % n) & m32
    out[(k + p) % n] = out[(k + p) % n] + r1 & m32
    out[(k + q) % n] = out[(k + q) % n] + r2 & m32
    out[k % n] = r2
  for k in range(max(2, n), max(2, n) + n):
    r3 = 1566083941 * mix(out[k % n] + out[(k + p) % n] + out[(k - 1) % n] & m32) & m32
    r4 = r3 - k % n & m32
    out[(k + p) % n] ^= r3
    out[(k + q) % n] ^= r4
    out[k % n] = r4
  return out


def train_batches(split: Split, seed: int, epoch: int, start_step: int = 0,
                  steps_per_call: int = 1) -> Iterator[Batch]:
  """This process's part of epoch `epoch`'s shuffled global batches, from `start_step`,
  stacked in blocks of `steps_per_call` (the epoch's last block may be shorter)."""
  order = grain.MapDataset.source(epoch_order(split.num_examples, seed, epoch))
  batches = order.batch(split.global_batch, drop_remainder=True).map(split._read)
  return iter(batches[start_step:].batch(steps_per_call).to_iter_dataset(_read_options()))


def eval_batches(split: Split) -> Iterator[Batch]:
  """This process's part of every example's image once, in order, in global batches; the
  last batch is padded with the last example (outputs past `split.num_examples` are to be
  dropped). Every process runs the same number of batches."""
  n, b = split.num_examples, split.global_batch
  read = lambda i: {'image': split._read(np.minimum(np.arange(i * b, (i + 1) * b), n - 1))['image']}
  return iter(grain.MapDataset.range(-(-n // b)).map(read).to_iter_dataset(_read_options()))


def hash_seed(seed: int, epoch: int) -> int:
  """A per-epoch shuffle seed."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
