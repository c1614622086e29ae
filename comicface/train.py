"""Training and evaluation on a `('data',)` mesh: pure steps under `jax.jit`."""
from __future__ import annotations

import json
import math
import pathlib
import signal
from typing import Any

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from comicface import checkpointing
from comicface import configuration
from comicface import input_pipeline
from comicface import logs
from comicface import models

Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  rng: jax.Array  # dropout key of the run; step `s` uses fold_in(rng, s)


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


def make_mesh() -> jax.sharding.Mesh:
  """All devices on one 'data' axis (Auto axes: Explicit ones break Flax's dropout)."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam or SGD; the learning rate is state (inject_hyperparams), so trials can differ in it."""
  make = {'adam': optax.adam, 'sgd': optax.sgd}[config.optimizer]
  return optax.inject_hyperparams(make)(learning_rate=config.learning_rate)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       image_shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises parameters and optimizer state, replicated over the mesh."""
  def init(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, jnp.zeros((1, *image_shape), jnp.uint8))['params']
    return TrainState.create(apply_fn=model.apply, params=params,
                             tx=create_optimizer(config), rng=dropout_rng)
  replicated = NamedSharding(mesh, P())
  return jax.jit(init, out_shardings=replicated)(jax.random.key(config.seed))


def _sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return {'loss': jnp.sum(losses * mask),
          'correct': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
          'count': jnp.sum(mask)}


def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Metrics]:
  """One Adam/SGD step on the mean cross-entropy; returns sums for the metrics."""
  rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, batch['image'], train=True, rngs={'dropout': rng})
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return losses.mean(), logits

  (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = _sums(logits, batch['label'], jnp.ones_like(batch['label'], jnp.float32))
  return state.apply_gradients(grads=grads), metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> Metrics:
  logits = state.apply_fn({'params': state.params}, batch['image'])
  return _sums(logits, batch['label'], batch['mask'])


def predict_step(state: TrainState, images: jax.Array) -> jax.Array:
  """P(face) per image."""
  return jax.nn.softmax(state.apply_fn({'params': state.params}, images))[:, 1]


class Steps:
  """The jitted steps for one mesh, and moving host batches onto it."""

  def __init__(self, mesh: jax.sharding.Mesh):
    self.data = NamedSharding(mesh, P('data'))
    rep = NamedSharding(mesh, P())
    self.train = jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=0)
    self.eval = jax.jit(eval_step, out_shardings=rep)
    self.predict = jax.jit(predict_step, out_shardings=self.data)

  def device_put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Builds global arrays from each process's slice of the batch."""
    return {k: jax.make_array_from_process_local_data(self.data, v) for k, v in batch.items()}


def summarize(sums: Metrics, prefix: str) -> dict[str, float]:
  sums = jax.device_get(sums)
  n = float(sums['count'])
  return {f'{prefix}_loss': float(sums['loss']) / n, f'{prefix}_accuracy': float(sums['correct']) / n}


def _add(a: Metrics | None, b: Metrics) -> Metrics:
  return b if a is None else jax.tree.map(jnp.add, a, b)


def evaluate_split(steps: Steps, state: TrainState, split: input_pipeline.Split,
                   prefix: str) -> dict[str, Any]:
  """Loss and accuracy over every example of `split` exactly once."""
  sums = None
  for batch in input_pipeline.eval_batches(split):
    sums = _add(sums, steps.eval(state, steps.device_put(batch)))
  out = summarize(sums, prefix)
  out[f'num_{prefix}_examples'] = int(jax.device_get(sums['count']))
  return out


class _Preemption:
  """While active, SIGTERM (what a preemption sends) sets a flag; Orbax's own
  preemption notice is checked too."""

  def __enter__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint at the next step, then exiting.')
    self.requested = True

  def __call__(self, mngr, step: int) -> bool:
    return self.requested or mngr.reached_preemption(step)


def _state_tree(state: TrainState) -> dict:
  return {'params': state.params, 'opt_state': state.opt_state, 'step': state.step}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Trains `config` in `workdir` (resuming what is there), then tests the best checkpoint.

  Writes and returns `workdir/results.json`; a finished workdir is only
  reported. Returns None if preempted (a checkpoint was saved; rerun to resume).
  """
  results_path = pathlib.Path(workdir) / 'results.json'
  configuration.claim_workdir(config, workdir)
  if results_path.exists():
    results = json.loads(results_path.read_text())
    logging.info('%s is finished: test accuracy %.4f. Nothing to do.', workdir, results['test_accuracy'])
    return results

  mesh = make_mesh()
  steps = Steps(mesh)
  builder = input_pipeline.prepare(config, workdir)
  train = input_pipeline.open_split(builder, list(config.train_splits), config.batch_size)
  val = input_pipeline.open_split(builder, 'validation', config.batch_size)
  if input_pipeline.steps_per_epoch(train) == 0:
    raise configuration.ConfigError(
        f'config.batch_size={config.batch_size} is larger than the training set '
        f'({train.num_examples} examples): lower it.')
  state = create_train_state(config, models.create_model(config), image_shape(config), mesh)
  logging.info('Model %s: %d parameters; %d train / %d validation examples.', config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)), train.num_examples, val.num_examples)

  mngr = checkpointing.manager(workdir, config.keep_checkpoints)
  history: list[dict[str, float]] = []
  if mngr.latest_step() is not None:
    tree, meta = checkpointing.restore(mngr, mngr.latest_step(), _state_tree(state))
    state, history = state.replace(**tree), meta['history']
    logging.info('Resumed from step %d (after epoch %d).', int(state.step), len(history))
  writer = logs.Writer(workdir, config)
  try:
    with _Preemption() as preempted:
      state = _train_epochs(config, steps, state, train, val, history, mngr, writer, preempted)
    if state is None:
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None
    best = mngr.best_step()
    tree, _ = checkpointing.restore(mngr, best, _state_tree(state))
    test_split = input_pipeline.open_split(builder, 'test', config.batch_size)
    test = evaluate_split(steps, state.replace(**tree), test_split, 'test')
  finally:
    writer.close()
    mngr.close()
  best_record = next(r for r in history if r['step'] == best)
  results = {**test, 'best_epoch': best_record['epoch'], 'best_step': best,
             'best_val_accuracy': best_record['val_accuracy'],
             'best_val_loss': best_record['val_loss'], 'history': history,
             'config': config.to_dict()}
  if jax.process_index() == 0:
    results_path.write_text(json.dumps(results, indent=2))
  logging.info('Test accuracy of the best checkpoint (epoch %d): %.4f on %d images.',
               results['best_epoch'], results['test_accuracy'], results['num_test_examples'])
  return results


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  c = input_pipeline.builder_config(config.dataset.name)
  return (c.size, c.size, 1 if c.mode == 'L' else 3)


def _train_epochs(config, steps: Steps, state: TrainState, train, val, history: list,
                  mngr, writer: logs.Writer, preempted: _Preemption) -> TrainState | None:
  """Runs the remaining epochs, appending to `history`; saves after each epoch.

  Returns the final state, or None after saving a checkpoint on preemption.
  """
  spe = input_pipeline.steps_per_epoch(train)
  total = spe * config.num_epochs
  progress = logs.Progress(total, config.batch_size, config.log_every_steps)
  step = int(state.step)
  while step < total:
    epoch, start = divmod(step, spe)
    sums = None
    for batch in input_pipeline.train_batches(train, config.seed, epoch, start):
      state, m = steps.train(state, steps.device_put(batch))
      sums, step = _add(sums, m), step + 1
      if progress.due(step) or step % spe == 0:
        s = summarize(sums, 'train')
        _check_finite(s, step)
        progress.log(step, epoch + 1, config.num_epochs, s)
        writer.scalars(step, s)
      if step % spe and preempted(mngr, step):
        checkpointing.save(mngr, step, _state_tree(state), {'history': history})
        mngr.wait_until_finished()
        return None
    val_metrics = evaluate_split(steps, state, val, 'val')
    record = {'epoch': epoch + 1, 'step': step, **summarize(sums, 'train'),
              'val_loss': val_metrics['val_loss'], 'val_accuracy': val_metrics['val_accuracy']}
    _check_finite(record, step)
    history.append(record)
    writer.scalars(step, record)
    logging.info('epoch %d: %s', epoch + 1,
                 ', '.join(f'{k} {v:.4f}' for k, v in record.items() if isinstance(v, float)))
    checkpointing.save(mngr, step, _state_tree(state), {'history': history},
                       metrics={'val_accuracy': record['val_accuracy'],
                                'val_loss': record['val_loss'], 'epoch': epoch + 1})
    if preempted(mngr, step) and step < total:
      mngr.wait_until_finished()
      return None
  mngr.wait_until_finished()
  return state


def _check_finite(metrics: dict[str, float], step: int) -> None:
  for k, v in metrics.items():
    if isinstance(v, float) and not math.isfinite(v):
      raise NonFiniteLossError(f'{k} is {v} at step {step}; no checkpoint was written for it. '
                               'Lower config.learning_rate, or check the data.')
