"""Fine-tuning: a run's first parameters and model state from the model trained in another workdir.

    config.init.workdir = 'runs/cnn'             # a run, or a search (its tested winner)
    config.init.skip = ('params/Dense_0/.*',)    # kept fresh: here the head, for other classes

The optimizer state and the step start fresh. `train.setup` calls `initialise` only where
the workdir has no checkpoint of its own, so a fine-tune resumes from its own.
"""
from __future__ import annotations

import pathlib
import re
from typing import TYPE_CHECKING, Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from comicface import errors
from comicface import steps as steps_lib
from comicface import workdir as workdirs

if TYPE_CHECKING:
  from comicface import inference

INIT_FILE = 'init.json'  # in the fine-tune's folder: where its first parameters came from
LOADED = ('params', 'model_state')  # what the source gives
EMA = 'ema_params'  # the parameters' moving average (config.ema_decay): what a model that kept one was tested with


class InitError(errors.UserError, ValueError):
  """config.init names no trained model, or one whose parameters do not fit this model."""


def _name(path: tuple) -> str:
  return jax.tree_util.keystr(path, simple=True, separator='/')


def named_leaves(state: steps_lib.State) -> dict[str, Any]:
  """The parameters and model state of `state` by their '/'-joined paths ('params/Dense_0/kernel')."""
  leaves, _ = jax.tree_util.tree_flatten_with_path({k: state[k] for k in LOADED})
  return {_name(path): leaf for path, leaf in leaves}


def source(init: ml_collections.ConfigDict, folders: Sequence[str]) -> inference.Model:
  """The model trained in `init.workdir` (its tested checkpoint, or `init.step`), restored
  without its data; `folders` are the fine-tune's own, which it must not be."""
  from comicface import inference  # pylint: disable=g-import-not-at-top  (inference imports train, which imports this)
  where = pathlib.Path(init.workdir).expanduser()
  if any(where.resolve() == pathlib.Path(f).resolve() for f in folders):
    raise InitError(f'config.init.workdir={init.workdir!r} is this run\'s own workdir: name another run\'s.')
  if not (where / 'config.json').exists():
    raise InitError(f'config.init.workdir={init.workdir!r} holds no trained run (no config.json): name the '
                    'workdir of a run or a search that has trained, or leave it empty for a fresh start.')
  try:
    return inference.load(str(where), step=init.step or None)
  except inference.NoCheckpointError as e:
    raise InitError(f'config.init.workdir={init.workdir!r}: {e}') from e


def initialise(state: steps_lib.State, init: ml_collections.ConfigDict, folders: Sequence[str],
               stacked: bool = False) -> steps_lib.State:
  """`state` (fresh; a stack's, with its trial axis: each member gets the same) with the
  parameters (their moving average, where it kept one) and model state of the model
  in `init.workdir`, but for those whose path matches a pattern of `init.skip`
  (`re.fullmatch`), which stay as they are. Records the source in `INIT_FILE` in each of
  `folders`. Raises InitError listing every parameter that does not match in name or
  shape and is not skipped."""
  model = source(init, folders)
  tested = {'params': model.state.get(EMA, model.state['params']), 'model_state': model.state['model_state']}
  theirs = named_leaves(jax.device_get(tested))
  mine = {p: leaf.shape[1:] if stacked else leaf.shape for p, leaf in named_leaves(state).items()}  # a member's
  fresh = sorted(p for p in {*mine, *theirs} if any(re.fullmatch(s, p) for s in init.skip))
  shapes = lambda p: (tuple(theirs[p].shape) if p in theirs else None, tuple(mine[p]) if p in mine else None)
  for pattern in init.skip:
    if not any(re.fullmatch(pattern, p) for p in fresh):
      logging.warning('config.init.skip: %r matches no parameter (they are named as in %s).', pattern, sorted(mine))
  wrong = [p for p in sorted({*mine, *theirs}) if p not in fresh and len(set(shapes(p))) > 1]
  if wrong:
    absent = lambda shape: 'absent' if shape is None else shape
    lines = '\n'.join(f'  {p}: {absent(a)} in the source, {absent(b)} in this model' for p in wrong
                      for a, b in [shapes(p)])
    patterns = tuple(sorted({p.rsplit('/', 1)[0] + '/.*' for p in wrong}))
    raise InitError(f'config.init.workdir={init.workdir!r} ({model.folder}, step {model.step}) does not fit this '
                    f'model:\n{lines}\nKeep them fresh with config.init.skip={patterns!r} (regular expressions '
                    'over these paths), or change the model to match.')

  def load(path: tuple, leaf: jax.Array) -> jax.Array:
    name = _name(path)
    if name in fresh:
      return leaf
    return jax.device_put(np.broadcast_to(theirs[name], leaf.shape).astype(leaf.dtype), leaf.sharding)
  loaded = jax.tree_util.tree_map_with_path(load, {k: state[k] for k in LOADED})
  if EMA in state:  # the average starts at the parameters, as in a fresh state
    loaded[EMA] = jax.tree.map(jnp.copy, loaded['params'])
  record = {'workdir': str(pathlib.Path(init.workdir).expanduser().absolute()),
            'folder': str(pathlib.Path(model.folder).absolute()), 'trial': model.trial, 'step': model.step,
            'tested': model.tested_step, 'skipped': fresh}  # tested: whether the source's training tested `step`
  if jax.process_index() == 0:
    for folder in folders:
      workdirs.write_json(pathlib.Path(folder) / INIT_FILE, record)
  logging.info('Initialised from %s (step %d); kept fresh: %s.', model.folder, model.step, fresh or 'none')
  return {**state, **loaded}
