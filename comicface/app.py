"""The entry point behind main.py: multi-host start-up, logging, then one mode."""
from __future__ import annotations

import os
from typing import Sequence

from absl import logging
import jax
import ml_collections

from comicface import configuration


def _quiet_libraries(record) -> bool:
  """Drops the INFO chatter of Orbax and TFDS; their warnings still show."""
  return record.levelno >= logging.WARNING or not any(
      lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/'))


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'train', *,
        split: str = 'test', step: int | None = None, images: Sequence[str] = ()) -> int:
  """Runs `mode` ('train', 'evaluate' or 'predict'); returns the process exit code."""
  logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
  if os.environ.get('COMICFACE_DISTRIBUTED') or os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize()  # TPU VMs, Slurm and OpenMPI fill in the arguments
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  configuration.validate(config)
  # Imported here so a bad config or flag fails before the heavier imports.
  from comicface import inference, train  # pylint: disable=g-import-not-at-top
  if mode == 'train':
    train.train_and_evaluate(config, workdir)  # None if preempted: exit 0, rerun resumes
  elif mode == 'evaluate':
    r = inference.evaluate(config, workdir, split, step)
    logging.info('%s accuracy %.4f, loss %.4f on %d images (checkpoint step %d).', split,
                 r['test_accuracy'], r['test_loss'], r['num_test_examples'], r['step'])
  elif mode == 'predict':
    if not images:
      raise ValueError("--mode=predict needs --images='GLOB' (comma-separated for several).")
    return 1 if inference.predict(config, workdir, list(images)) else 0
  else:
    raise ValueError(f"--mode must be 'train', 'evaluate' or 'predict', not {mode!r}")
  return 0
