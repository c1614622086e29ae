"""The entry point behind main.py: multi-host start-up, logging, one mode, readable errors."""
from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import TYPE_CHECKING, Sequence

from absl import logging
import jax
import ml_collections

from comicface import configuration
from comicface import errors
from comicface import host

if TYPE_CHECKING:
  from comicface import inference  # pylint: disable=g-bad-import-order  (imported by _run: heavier)


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


def run(config: ml_collections.ConfigDict | None, workdir: str, mode: str = 'train', *,
        split: str = 'test', step: int | None = None, images: Sequence[str] = (),
        data: str | None = None, data_dir: str | None = None, verbose: bool = False) -> int:
  """Runs `mode` ('train', 'evaluate', 'predict' or 'export'); returns the process exit code.

  The project's own errors (errors.UserError) print their message alone and
  return 1; `verbose` (or COMICFACE_VERBOSE=1) lets them raise, with the traceback.
  """
  try:
    return _run(config, workdir, mode, split=split, step=step, images=images, data=data,
                data_dir=data_dir)
  except errors.UserError as e:
    if verbose or os.environ.get('COMICFACE_VERBOSE', '') not in ('', '0'):
      raise
    print(f'{type(e).__name__}: {e}', file=sys.stderr, flush=True)
    return 1


def _run(config, workdir, mode, *, split, step, images, data, data_dir) -> int:
  logging.get_absl_handler().python_handler.addFilter(_quiet_libraries)
  _initialize_distributed()
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # process 0 alone logs progress
  logging.info('JAX process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())
  host.warn_if_accelerator_unused()
  if config is None and mode == 'train':
    raise errors.ConfigError('--mode=train needs --config=configs/NAME.py.')
  if config is not None:
    configuration.validate(config)
  if mode == 'predict' and not images:
    raise errors.ConfigError("--mode=predict needs --images='GLOB' (comma-separated for several).")
  # Imported here so a bad config or flag fails before the heavier imports.
  from comicface import inference, search, train  # pylint: disable=g-import-not-at-top
  if mode == 'train':  # each returns None if preempted (SIGTERM, even while waiting for the workdir): exit 0
    (search.run if config.grid else train.train_and_evaluate)(config, workdir)
    return 0
  model = inference.load(workdir, config, step)
  if mode == 'export':
    out = model.export()
    logging.info('Exported checkpoint step %d%s to %s (model.jax for %s; model.json).', model.step,
                 f' of trial {model.trial}' if model.trial else '', out, ', '.join(inference.EXPORT_PLATFORMS))
    return 0
  if mode == 'evaluate':
    r = model.evaluate(data, split, data_dir)
    lo, hi = r['accuracy_95ci']
    logging.info('%s of %s: accuracy %.4f (95%% CI %.4f-%.4f), loss %.4f, %d errors in %d images '
                 '(checkpoint step %d%s).', split, r['data'], r['accuracy'], lo, hi, r['loss'], r['errors'],
                 r['num_examples'], r['step'], f', trial {r["trial"]}' if r['trial'] else '')
    return 0
  return print_predictions(model, inference.expand_patterns(images))


def print_predictions(model: inference.Model, paths: Sequence[str]) -> int:
  """Prints `PATH<TAB>class<TAB>class=p<TAB>class=p...` (`model.top`'s probabilities; tabs,
  as class names may hold spaces) for each readable image of `paths`, `PATH<TAB>error<TAB>why`
  for each other one; returns 1 if any failed, else 0."""
  failed = 0
  for path, probs, why in model.predict_files(paths):
    if probs is None:
      failed += 1
      print(f'{path}\terror\t{why}', flush=True)
    else:
      shown = '\t'.join(f'{c}={p:.4f}' for c, p in model.top(probs))
      print(f'{path}\t{model.classes[int(probs.argmax())]}\t{shown}', flush=True)
  return 1 if failed else 0
