"""The entry point behind main.py: multi-host start-up, logging, then one mode."""
from __future__ import annotations

import logging as std_logging
import os
from typing import Sequence

from absl import logging
import jax
import ml_collections

from comicface import configuration


def _quiet_libraries(record) -> bool:
  """Drops the INFO chatter of Orbax and TFDS; their warnings still show."""
  return record.levelno >= std_logging.WARNING or not any(
      lib in record.pathname for lib in ('/orbax/', '/tensorflow_datasets/'))


def _initialize_distributed() -> None:
  """Joins a multi-process run when launched as one.

  COMICFACE_DISTRIBUTED=1: JAX finds the arguments itself (TPU VMs, Slurm,
  OpenMPI). Elsewhere set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES
  and JAX_PROCESS_ID on every process.
  """
  env = os.environ
  if env.get('COMICFACE_DISTRIBUTED') or env.get('JAX_COORDINATOR_ADDRESS'):
    kwargs = {}
    if 'JAX_NUM_PROCESSES' in env:
      kwargs = dict(num_processes=int(env['JAX_NUM_PROCESSES']), process_id=int(env['JAX_PROCESS_ID']))
    jax.distributed.initialize(**kwargs)


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'train', *,
        split: str = 'test', step: int | None = None, images: Sequence[str] = ()) -> int:
  """Runs `mode` ('train', 'evaluate' or 'predict'); returns the process exit code."""
  logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
  _initialize_distributed()
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # process 0 alone logs progress
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  configuration.validate(config)
  # Imported here so a bad config or flag fails before the heavier imports.
  from comicface import grid, inference, train  # pylint: disable=g-import-not-at-top
  if mode == 'train':  # each returns None if preempted: exit 0, and a rerun resumes
    (grid.run if config.grid else train.train_and_evaluate)(config, workdir)
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
