"""Evaluate a saved checkpoint on a split, or predict new image files."""
from __future__ import annotations

import glob
import json
import pathlib
import sys
from typing import Any, TextIO

import jax
import ml_collections
import numpy as np

from comicface import checkpointing
from comicface import configuration
from comicface import imaging
from comicface import input_pipeline
from comicface import train


class NoCheckpointError(FileNotFoundError):
  """The workdir holds no checkpoint to restore."""


def restore_state(config: ml_collections.ConfigDict, workdir: str,
                  step: int | None = None) -> tuple[train.Steps, train.TrainState, int]:
  """The jitted steps and the state of checkpoint `step` (default: the best one)."""
  configuration.check_workdir(config, workdir)
  mesh = train.make_mesh()
  state = train.create_train_state(config, mesh)
  mngr = checkpointing.manager(workdir, config.keep_checkpoints)
  try:
    available = mngr.all_steps()
    if not available:
      raise NoCheckpointError(f'{workdir} holds no checkpoint: train there first '
                              '(the same command without --mode).')
    step = mngr.best_step() if step is None else step
    if step not in available:
      raise NoCheckpointError(f'{workdir} has no checkpoint at step {step}; it has {sorted(available)}.')
    state = train.restore(mngr, step, state)
  finally:
    mngr.close()
  return train.steps_for(mesh, predict_chunk=config.predict_chunk), state, step


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: str = 'test',
             step: int | None = None) -> dict[str, Any]:
  """Evaluates checkpoint `step` (default: best) on `split`; writes `workdir/evaluation.json`."""
  steps, state, step = restore_state(config, workdir, step)
  builder = input_pipeline.prepare(config, workdir)
  data = input_pipeline.open_split(builder, split, config.batch_size,
                                   config.dataset.split_scheme)
  (metrics,), _ = train.evaluate_split(steps, state, data, 'test')
  results = {**metrics, 'split': split, 'step': step,
             'config': config.to_dict()}
  if jax.process_index() == 0:
    (pathlib.Path(workdir) / 'evaluation.json').write_text(json.dumps(results, indent=2))
  return results


def predict(config: ml_collections.ConfigDict, workdir: str, patterns: list[str],
            out: TextIO = sys.stdout) -> int:
  """Prints `PATH<TAB>face|comic<TAB>P(face)` per image, `PATH<TAB>error<TAB>WHY` per failure.

  Images are decoded with the builder's own function. Returns the error count.
  """
  steps, state, _ = restore_state(config, workdir)
  bcfg = input_pipeline.builder_config(config.dataset.name)
  paths = [p for pattern in patterns for p in (sorted(glob.glob(pattern)) or [pattern])]
  batch = max(jax.device_count(), config.batch_size)
  errors = 0
  for start in range(0, len(paths), batch):
    images, good = [], []
    for path in paths[start:start + batch]:
      try:
        if pathlib.Path(path).is_dir():
          raise imaging.ImageError('is a directory')
        images.append(imaging.load_image(path, bcfg.size, bcfg.mode))
        good.append(path)
      except (imaging.ImageError, OSError) as e:
        errors += 1
        print(f'{path}\terror\t{e}', file=out, flush=True)
    if not good:
      continue
    x = np.stack(images + [images[0]] * (batch - len(images)))  # fixed shape: one compile
    p_face = np.asarray(jax.device_get(steps.predict(state, jax.device_put(x, steps.data))))
    for path, p in zip(good, p_face):
      print(f'{path}\t{"face" if p >= 0.5 else "comic"}\t{p:.4f}', file=out, flush=True)
  return errors
