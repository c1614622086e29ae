"""Orbax checkpoints: the latest N and the best by validation accuracy, kept together."""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


def rank(metrics: dict[str, float]) -> tuple[float, float, float]:
  """Orders checkpoints: higher val accuracy, then lower val loss, then earlier epoch."""
  return (metrics['val_accuracy'], -metrics['val_loss'], -metrics['epoch'])


def manager(workdir: str, keep_latest: int) -> ocp.CheckpointManager:
  """A manager in `workdir/checkpoints` saving `state` (arrays) and `meta` (JSON)."""
  options = ocp.CheckpointManagerOptions(
      best_fn=rank, best_mode='max',
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(keep_latest),
          policies.BestN(get_metric_fn=rank, n=1, keep_checkpoints_without_metrics=False),
      ]),
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints', options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         metrics: dict[str, float] | None = None) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta)),
            metrics=metrics, force=True)


def restore(mngr: ocp.CheckpointManager, step: int, target: Any) -> tuple[Any, dict]:
  """Restores `step` into the shape, dtype and sharding of `target` (arrays or abstract)."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                   meta=ocp.args.JsonRestore()))
  return out['state'], out['meta']
