"""Shared fixtures: small generated sources and a helper that builds from them."""
import os
import pathlib
import shutil
import tempfile

# The suite runs on CPU devices (several, where a test forces them), also on a machine whose JAX sees
# a GPU or TPU: the main.py processes it starts inherit this. bench/accelerator.py checks the device.
os.environ['JAX_PLATFORMS'] = 'cpu'
# One JAX compilation cache for the session, its xdist workers and the main.py processes they start
# (they inherit the environment): the many tiny runs compile the same steps, once. Set before JAX starts.
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID')  # the same in every worker of one `pytest -n N`
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), f'comicface_tests_jax_cache_{_RUN}')
                      if _RUN else tempfile.mkdtemp(prefix='comicface_tests_jax_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import pytest
import tensorflow_datasets as tfds

from comicface import build_dataset, synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
DUMMY_DATA = ROOT / 'tfds_builder' / 'comic_faces' / 'dummy_data'
REAL_SAMPLE = ROOT.parent / 'shared' / 'real_sample' / 'face2comics_v1.0.0_sample'


def build(manual_dir, data_dir, config='rgb24', max_bad_fraction=None) -> tfds.core.DatasetBuilder:
  """Builds `comic_faces/<config>` from `manual_dir` as array_record, without TensorFlow."""
  return build_dataset.build(str(manual_dir), config, str(data_dir), max_bad_fraction)


@pytest.fixture(scope='session')
def source_40(tmp_path_factory) -> pathlib.Path:
  """40 generated pairs, 96 px, v2 layout; returns the outer folder (read-only use)."""
  root = tmp_path_factory.mktemp('source_40')
  synthetic.write_dataset(root, 40, size=96, seed=3)
  return root


@pytest.fixture
def source_copy(source_40, tmp_path) -> pathlib.Path:
  """A private copy of the inner folder of `source_40`, free to damage."""
  dst = tmp_path / 'src'
  shutil.copytree(source_40 / synthetic.V2_INNER, dst)
  return dst


TINY_PAIRS = 64


def override(config, **overrides):
  """`config` with dotted fields set: override(c, **{'model.filters_1': 16})."""
  from comicface import configuration  # pylint: disable=g-import-not-at-top
  for key, value in overrides.items():
    node, leaf = configuration.parent(config, key)
    node[leaf] = value
  return config


def tiny_config(**overrides):
  """configs/default.py:runlocal shrunk to seconds: an 8/4-filter CNN on 64 generated pairs."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config('runlocal')
  config.dataset.synthetic_pairs = TINY_PAIRS
  config.model.filters_1, config.model.filters_2 = 8, 4
  config.learning_rate = 1e-2
  config.batch_size = 8
  config.log_every_steps = 100
  config.checkpoint_seconds = 0.0  # every epoch: the kill tests wait for checkpoints mid-run
  return override(config, **overrides)


def read_predictions(stdout: str) -> tuple[dict[str, tuple[str, list[tuple[str, float]]]], dict[str, str]]:
  """`--mode=predict`'s lines read back, split at tabs: ({PATH: (class, [(class, probability),
  ...])}, {PATH: why} of its error lines), each in the printed order."""
  shown, errors = {}, {}
  for line in stdout.splitlines():
    path, label, *rest = line.split('\t')
    if label == 'error':
      errors[path], = rest
    else:
      shown[path] = (label, [(name, float(p)) for name, p in (pair.rsplit('=', 1) for pair in rest)])
  return shown, errors


class Compiles:
  """Counts XLA compilations by function name while entered (JAX's own compile event)."""

  def __enter__(self):
    import collections  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    self.counts = collections.Counter()
    self._active = True

    def listen(event, duration, **kwargs):
      del duration
      if self._active and event == '/jax/core/compile/backend_compile_duration':
        self.counts[kwargs.get('fun_name', '?')] += 1
    jax.monitoring.register_event_duration_secs_listener(listen)
    return self

  def __exit__(self, *exc):
    self._active = False  # JAX keeps its listeners; this one stops counting
