"""Dataset preparation and batches: grain over the TFDS array_record data source.

Batches are built from global indices, so every process sees the same global
batch whatever the process and device counts: each epoch's permutation of
`range(N)` is seeded by `(seed, epoch)`, cut into global batches, and each
process reads only its own slice of each batch. A batch is therefore a pure
function of `(seed, epoch, step)`, which is what makes resume exact.
"""
from __future__ import annotations

import dataclasses
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
from comicface import errors
from comicface import synthetic
from comicface import workdir as workdirs
from comicface import splits
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces

Batch = dict[str, np.ndarray]


class SourceMismatchError(errors.UserError, RuntimeError):
  """A built dataset exists, but from another source than the config names."""


def builder_config(dataset_name: str) -> comic_faces.ComicFacesConfig:
  """The `ComicFacesConfig` named by 'comic_faces/<config>'."""
  name, _, config = dataset_name.partition('/')
  configs = comic_faces.Builder.builder_configs
  if name != 'comic_faces' or config not in configs:
    raise errors.ConfigError(f'config.dataset.name={dataset_name!r} is not one of '
                     f'{["comic_faces/" + c for c in configs]}')
  return configs[config]


def source_dirs(ds: ml_collections.ConfigDict, workdir: str) -> tuple[pathlib.Path, str | None, bool]:
  """(manual_dir, data_dir, is_stand_in) for the config."""
  if ds.manual_dir:
    return pathlib.Path(ds.manual_dir).expanduser(), ds.data_dir or None, False
  # The stand-in and its build live together, one folder per generator setting.
  hard = f'_difficulty{ds.synthetic_difficulty:g}' if ds.synthetic_difficulty else ''
  root = pathlib.Path(workdir).absolute() / (
      f'standin_{ds.synthetic_pairs}x{ds.synthetic_size}_seed{ds.synthetic_seed}{hard}')
  return root, ds.data_dir or str(root / 'tfds'), True


def prepare(config: ml_collections.ConfigDict, workdir: str) -> tfds.core.DatasetBuilder:
  """Returns the built dataset of `config.dataset`, building it on first use.

  With no `manual_dir`, a synthetic stand-in is generated in the workdir first.
  A build is reused only if it came from the same source files (fingerprint).
  Process 0 builds first; the others then find the build (shared disk) or make
  their own (local disks).
  """
  ds = config.dataset
  manual_dir, data_dir, stand_in = source_dirs(ds, workdir)
  lock = (manual_dir if stand_in else build_dataset.build_dir(builder_config(ds.name).name, data_dir).parent)
  for turn in range(2):
    if (jax.process_index() == 0) == (turn == 0):
      with workdirs.exclusive(lock / '.prepare.lock'):  # jobs sharing the folder build it once
        if stand_in:
          logging.warning('*' * 72 + '\n  config.dataset.manual_dir is empty: using a GENERATED '
                          'STAND-IN\n  (%d synthetic pairs in %s), not on the Kaggle data.\n' + '*' * 72,
                          ds.synthetic_pairs, manual_dir)
          if not (manual_dir / synthetic.V2_INNER / 'comics' / f'{ds.synthetic_pairs - 1}.jpg').exists():
            synthetic.write_dataset(manual_dir, ds.synthetic_pairs, ds.synthetic_size, ds.synthetic_seed,
                                    difficulty=ds.synthetic_difficulty)
        builder = _build(ds, manual_dir, data_dir)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'comicface dataset prepared, turn {turn}')
  return builder


def _build(ds, manual_dir: pathlib.Path, data_dir: str | None) -> tfds.core.DatasetBuilder:
  current = comic_faces.fingerprint(comic_faces.list_items(comic_faces.find_root(manual_dir)))
  builder = build_dataset.build(str(manual_dir), builder_config(ds.name).name, data_dir,
                                ds.max_bad_fraction)  # a no-op when built before
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


@dataclasses.dataclass(frozen=True)
class Task:
  """What the data asks of a model: its class names (label i is classes[i]) and image shape."""
  classes: tuple[str, ...]
  image_shape: tuple[int, int, int]

  @classmethod
  def of(cls, builder: tfds.core.DatasetBuilder) -> Task:
    features = builder.info.features
    return cls(tuple(features['label'].names), tuple(features['image'].shape))

  @classmethod
  def of_name(cls, dataset_name: str) -> Task:
    """The task of 'comic_faces/<config>' read off its builder config, without a build (for
    benchmarks and tests; runs take it from the build)."""
    c = builder_config(dataset_name)
    return cls(comic_faces.CLASS_NAMES, (c.size, c.size, 1 if c.mode == 'L' else 3))

  @property
  def image_mode(self) -> str:
    """The colour mode of `imaging.load_image` that gives this shape."""
    return 'L' if self.image_shape[-1] == 1 else 'RGB'


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of the built dataset, read by position: `source[index[i]]`, or
  `source[i]` when `index` is None."""
  source: Any  # a TFDS ArrayRecordDataSource
  global_batch: int
  index: np.ndarray | None = None

  @property
  def num_examples(self) -> int:
    return len(self.source) if self.index is None else len(self.index)

  @property
  def local_batch(self) -> int:
    return self.global_batch // jax.process_count()

  def records(self, positions: Sequence[int]) -> list[dict]:
    """The examples at `positions` of this split; a damaged file raises CorruptBuildError."""
    rows = [int(i) for i in (positions if self.index is None else self.index[np.asarray(positions, int)])]
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

  def _read(self, positions: np.ndarray) -> Batch:
    """Reads this process's slice of a global batch of positions."""
    p = jax.process_index()
    records = self.records(positions[p * self.local_batch:(p + 1) * self.local_batch])
    return {'image': np.stack([r['image'] for r in records]),
            'label': np.asarray([r['label'] for r in records], np.int32)}


_SCHEMES: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (build folder, scheme): its splits


def _scheme_source(builder: tfds.core.DatasetBuilder, scheme: str) -> tuple[Any, dict[str, np.ndarray]]:
  """The whole build as one source, and the positions of each split of `scheme` in it
  (computed once per build and scheme in a process: it reads every example)."""
  source = builder.as_data_source('train+validation+test')
  key = (str(builder.data_dir), scheme)
  if key not in _SCHEMES:
    whole = Split(source, 1)
    meta = [whole.records(range(i, min(i + 1024, len(source)))) for i in range(0, len(source), 1024)]
    labels = np.asarray([r['label'] for chunk in meta for r in chunk])
    index = np.asarray([r['index_in_class'] for chunk in meta for r in chunk])
    _SCHEMES[key] = splits.COMPUTED[scheme](labels, index)
  return source, _SCHEMES[key]


def open_split(builder: tfds.core.DatasetBuilder, split: str | Sequence[str], global_batch: int,
               scheme: str = 'pairs') -> Split:
  """`split` may be several ('train', 'validation') read as one. `scheme` 'pairs' is
  the builder's own pair-grouped split; the others are computed at load time."""
  names = [split] if isinstance(split, str) else list(split)
  if scheme == 'pairs':
    return Split(builder.as_data_source('+'.join(names)), global_batch)
  source, parts = _scheme_source(builder, scheme)
  return Split(source, global_batch, np.concatenate([parts[n] for n in names]))


def train_batches(split: Split, seed: int, epoch: int, start_step: int = 0,
                  steps_per_call: int = 1) -> Iterator[Batch]:
  """This process's part of epoch `epoch`'s shuffled global batches, from `start_step`,
  stacked in blocks of `steps_per_call` (the epoch's last block may be shorter)."""
  order = grain.MapDataset.range(split.num_examples).shuffle(seed=hash_seed(seed, epoch))
  batches = order.batch(split.global_batch, drop_remainder=True).map(split._read)
  return iter(batches[start_step:].batch(steps_per_call).to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))


def eval_batches(split: Split) -> Iterator[Batch]:
  """Every example once, in order, the last batch padded and masked (`mask` = 0).

  Every process runs the same number of batches.
  """
  n, b = split.num_examples, split.global_batch
  num_batches = -(-n // b)

  def read(i: int) -> Batch:
    indices = np.arange(i * b, (i + 1) * b)
    batch = split._read(np.minimum(indices, n - 1))
    p = jax.process_index()
    batch['mask'] = (indices < n)[p * split.local_batch:(p + 1) * split.local_batch].astype(np.float32)
    return batch
  return iter(grain.MapDataset.range(num_batches).map(read).to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))


def hash_seed(seed: int, epoch: int) -> int:
  """A per-epoch shuffle seed."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
