"""Dataset preparation and batches: grain over the TFDS array_record data source.

Batches are built from global indices, so every process sees the same global
batch whatever the process and device counts: each epoch's permutation of
`range(N)` is seeded by `(seed, epoch)`, cut into global batches, and each
process reads only its own slice of each batch. A batch is therefore a pure
function of `(seed, epoch, step)`, which is what makes resume exact.
"""
from __future__ import annotations

import dataclasses
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


SPLITS = ('train', 'validation', 'test')  # a build's splits, in the order its whole source reads them


@dataclasses.dataclass(frozen=True)
class Split:
  """One split (or several read as one) of a build, read by position: example i is
  `source[index[i]]`, where `source` reads the whole build (every split, in SPLITS order)."""
  source: Any  # a TFDS ArrayRecordDataSource over the whole build
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
  """The positions of each split of `scheme` in the whole build: the builder's own splits
  for 'pairs'; the others computed once per build and scheme in a process (reading every example)."""
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


def open_split(builder: tfds.core.DatasetBuilder, split: str | Sequence[str], global_batch: int,
               scheme: str = 'pairs') -> Split:
  """`split` may be several ('train', 'validation') read as one. `scheme` 'pairs' is
  the builder's own pair-grouped split; the others are computed at load time."""
  names = [split] if isinstance(split, str) else list(split)
  source = builder.as_data_source('+'.join(SPLITS))
  parts = _positions(builder, source, scheme)
  return Split(source, global_batch, np.concatenate([parts[n] for n in names]), str(builder.data_dir))


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
