"""Training and evaluation: pure steps under `jax.jit` on a ('trial', 'data') mesh.

A run trains one model, or a stack of trials that differ only in values
(learning rate, dropout rate): their states carry a leading trial axis, the
steps are `jax.vmap`ped over it, and all trials see the same batches.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import signal
from typing import Any, Callable, Sequence

from absl import logging
from flax import linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from comicface import checkpointing
from comicface import configuration
from comicface import errors
from comicface import input_pipeline
from comicface import logs
from comicface import models
from comicface import report
from comicface import workdir as workdirs

Metrics = dict[str, jax.Array]
Record = dict[str, float]


class TrainState(train_state.TrainState):
  rng: jax.Array           # the run's dropout key; step `s` uses fold_in(rng, s)
  dropout_rate: jax.Array  # a value, not a shape: stacked trials may differ in it


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """The loss became NaN or Inf."""


def make_mesh(trials: int = 1) -> jax.sharding.Mesh:
  """All devices on ('trial', 'data'); stacked trials spread over 'trial' where
  the counts divide (one process). Auto axes: Explicit ones break Flax's dropout."""
  n = jax.device_count()
  t = math.gcd(trials, n) if jax.process_count() == 1 else 1
  return jax.make_mesh((t, n // t), ('trial', 'data'), axis_types=(jax.sharding.AxisType.Auto,) * 2)


@functools.cache
def create_optimizer(name: str) -> optax.GradientTransformation:
  """Adam or SGD, one instance per name. The learning rate is state
  (inject_hyperparams, set by `create_train_state`), so trials can differ in it."""
  make = {'adam': optax.adam, 'sgd': optax.sgd}[name]
  return optax.inject_hyperparams(make)(learning_rate=0.0)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  c = input_pipeline.builder_config(config.dataset.name)
  return (c.size, c.size, 1 if c.mode == 'L' else 3)


@functools.cache
def _initializer(model: nn.Module, tx: optax.GradientTransformation, shape: tuple[int, ...],
                 mesh: jax.sharding.Mesh, stacked: bool) -> Callable[..., TrainState]:
  """The jitted init of (model, tx): cached, like `steps_for`, so that runs of one shape
  share it, and their states hold the same model object (the state's `apply_fn`, a bound
  method, compares by its module's identity, and compiled steps key on it)."""
  def init(rng, learning_rate, dropout_rate):
    params_rng, dropout_rng = jax.random.split(rng)
    params = model.init(params_rng, jnp.zeros((1, *shape), jnp.uint8))['params']
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=dropout_rng,
                              dropout_rate=jnp.float32(dropout_rate))
    hyper = {**state.opt_state.hyperparams, 'learning_rate': jnp.float32(learning_rate)}
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))

  if stacked:
    return jax.jit(jax.vmap(init, in_axes=(None, 0, 0)), out_shardings=NamedSharding(mesh, P('trial')))
  return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       trials: Sequence[ml_collections.ConfigDict] = ()) -> TrainState:
  """The initial state of `config`, replicated; with `trials`, a stack of one state
  per trial config (same initial parameters, each its own learning and dropout rate).

  Equal configs give states of one pytree structure (the same model and optimizer
  objects), so a grid's trials of one shape reuse each other's compiled steps.
  """
  init = _initializer(models.create_model(config), create_optimizer(config.optimizer),
                      image_shape(config), mesh, bool(trials))
  rates = [(c.learning_rate, c.model.get('dropout_rate', 0.0)) for c in (trials or [config])]
  lrs, drops = (jnp.asarray(v, jnp.float32) for v in zip(*rates))
  key = jax.random.key(config.seed)
  return init(key, lrs, drops) if trials else init(key, lrs[0], drops[0])


def _sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return {'loss': jnp.sum(losses * mask),
          'correct': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
          'count': jnp.sum(mask)}


def train_step(state: TrainState, batch: dict[str, jax.Array],
               hflip: bool = False) -> tuple[TrainState, Metrics]:
  """One optimizer step on the mean cross-entropy; returns sums for the metrics.

  `hflip` mirrors a random half of the images left-right first (the MLP study's augmentation).
  """
  rng = jax.random.fold_in(state.rng, state.step)
  images = batch['image']
  if hflip:
    rng, flip_rng = jax.random.split(rng)
    flip = jax.random.bernoulli(flip_rng, 0.5, images.shape[:1])[:, None, None, None]
    images = jnp.where(flip, images[:, :, ::-1], images)

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, images, train=True,
                            dropout_rate=state.dropout_rate, rngs={'dropout': rng})
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return losses.mean(), logits

  (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = _sums(logits, batch['label'], jnp.ones_like(batch['label'], jnp.float32))
  return state.apply_gradients(grads=grads), metrics


def train_block(state: TrainState, batches: dict[str, jax.Array],
                hflip: bool = False) -> tuple[TrainState, Metrics]:
  """`train_step` over the leading axis of `batches` in one call (a `lax.scan`),
  for models whose step is shorter than a dispatch; returns the summed metrics.

  A block of one is a plain step: XLA:CPU runs convolutions inside a loop on a
  much slower path, so the CNN keeps `config.steps_per_call = 1`.
  """
  step = functools.partial(train_step, hflip=hflip)
  if batches['label'].shape[0] == 1:
    return step(state, jax.tree.map(lambda x: x[0], batches))
  state, metrics = jax.lax.scan(step, state, batches)
  return state, jax.tree.map(lambda m: m.sum(0), metrics)


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[Metrics, jax.Array]:
  """Masked sums, and P(face) per example."""
  logits = state.apply_fn({'params': state.params}, batch['image'])
  return _sums(logits, batch['label'], batch['mask']), jax.nn.softmax(logits)[..., 1]


def predict_step(state: TrainState, images: jax.Array, chunk: int = 0) -> jax.Array:
  """P(face) per image, `chunk` images per forward pass (0: all at once), so that a
  large batch holds no more activations at a time than a training batch does."""
  forward = lambda x: jax.nn.softmax(state.apply_fn({'params': state.params}, x))[:, 1]
  n = images.shape[0]
  if not chunk or n <= chunk or n % chunk:
    return forward(images)
  return models.merge_slices(jax.lax.map(forward, models.strided_slices(images, chunk)))


class Steps:
  """The jitted steps for one mesh (vmapped over trials if `stacked`), and moving
  host batches onto the mesh. `train` takes a block of batches (see `train_block`).
  Make them with `steps_for(...)`, which keeps one per setting, so that runs of one
  shape (a grid's trials) compile once."""

  def __init__(self, mesh: jax.sharding.Mesh, stacked: bool = False, hflip: bool = False,
               predict_chunk: int = 0):
    self.data = NamedSharding(mesh, P('data'))
    self.blocks = NamedSharding(mesh, P(None, 'data'))
    rep = NamedSharding(mesh, P())
    state = NamedSharding(mesh, P('trial')) if stacked else rep
    train, evaluate = functools.partial(train_block, hflip=hflip), eval_step
    if stacked:
      train, evaluate = (jax.vmap(f, in_axes=(0, None)) for f in (train, eval_step))
    self.train = jax.jit(train, out_shardings=(state, rep), donate_argnums=0)
    self.eval = jax.jit(evaluate, out_shardings=(rep, rep))
    self.predict = jax.jit(functools.partial(predict_step, chunk=predict_chunk),
                           out_shardings=self.data)

  def device_put(self, batch: dict[str, np.ndarray], block: bool = False) -> dict[str, jax.Array]:
    """Builds global arrays from each process's slice of the batch (or block of batches)."""
    sharding = self.blocks if block else self.data
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


steps_for = functools.cache(Steps)


def summarize(sums: Metrics, prefix: str) -> list[Record]:
  """Mean loss and accuracy, one record per trial."""
  loss, correct, count = (np.atleast_1d(jax.device_get(sums[k])) for k in ('loss', 'correct', 'count'))
  return [{f'{prefix}_loss': float(l / n), f'{prefix}_accuracy': float(c / n)}
          for l, c, n in zip(loss, correct, count)]


def _count(sums: Metrics) -> int:
  """Examples counted (masked), the same for every trial."""
  return int(np.atleast_1d(jax.device_get(sums['count']))[0])


def _add(a: Metrics | None, b: Metrics) -> Metrics:
  return b if a is None else jax.tree.map(jnp.add, a, b)


def evaluate_split(steps: Steps, state: TrainState, split: input_pipeline.Split,
                   prefix: str) -> tuple[list[Record], np.ndarray]:
  """Loss and accuracy per trial over every example of `split` exactly once (with
  the count of examples seen, across all processes), and P(face) per example
  (shape [examples] or [trials, examples]), in split order."""
  sums, probs = None, []
  for batch in input_pipeline.eval_batches(split):
    s, p = steps.eval(state, steps.device_put(batch))
    sums = _add(sums, s)
    probs.append(np.asarray(jax.device_get(p)))
  records = [{**r, f'num_{prefix}_examples': _count(sums)} for r in summarize(sums, prefix)]
  return records, np.concatenate(probs, axis=-1)[..., :split.num_examples]


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


def state_tree(state: TrainState) -> dict:
  """What a checkpoint holds of the state (not the static model and optimizer)."""
  return {'params': state.params, 'opt_state': state.opt_state, 'step': state.step}


@dataclasses.dataclass
class Run:
  """Everything one training run (of one model or a stack of trials) works with."""
  config: ml_collections.ConfigDict
  workdir: str
  steps: Steps
  state: TrainState
  builder: Any
  mngr: ocp.CheckpointManager
  trial_names: list[str]
  histories: list[list[Record]]

  @property
  def stacked(self) -> bool:
    return len(self.trial_names) > 1

  def restore(self, step: int) -> TrainState:
    return restore(self.mngr, step, self.state)


def restore(mngr: ocp.CheckpointManager, step: int, state: TrainState) -> TrainState:
  """`state` with the arrays of checkpoint `step`, in their shardings."""
  tree, _ = checkpointing.restore(mngr, step, state_tree(state))
  return state.replace(**tree)


def setup(config: ml_collections.ConfigDict, workdir: str,
          trials: Sequence[ml_collections.ConfigDict] = (), trial_names: Sequence[str] = ()) -> Run:
  """Builds the data, the state (resumed from `workdir` if it holds checkpoints)
  and the steps of a run; `trials` (with names) makes it a stacked run."""
  mesh = make_mesh(len(trials) or 1)
  builder = input_pipeline.prepare(config, workdir)
  state = create_train_state(config, mesh, trials)
  mngr = checkpointing.manager(workdir, config.keep_checkpoints)
  names = list(trial_names) or ['']
  histories = [[] for _ in names]
  restored = checkpointing.restore_latest(mngr, state_tree(state))
  if restored:
    tree, meta = restored
    state, histories = state.replace(**tree), meta['histories']
    logging.info('%s: resumed from step %d (after epoch %d).', workdir, int(tree['step'].max()),
                 len(histories[0]))
  steps = steps_for(mesh, stacked=bool(trials), hflip=config.augment_hflip,
                    predict_chunk=config.predict_chunk)
  return Run(config, workdir, steps, state, builder, mngr, names, histories)


def fit(run: Run, tensorboard_dirs: Sequence[str], stop_on_nonfinite: bool = True) -> bool:
  """Trains the remaining epochs, appending to `run.histories`; checkpoints each epoch.

  Returns False if preempted (after saving a checkpoint at the current step).
  """
  config = run.config
  scheme = config.dataset.split_scheme
  train = input_pipeline.open_split(run.builder, config.train_splits, config.batch_size, scheme)
  val = input_pipeline.open_split(run.builder, 'validation', config.batch_size, scheme)
  spe = input_pipeline.steps_per_epoch(train)
  if spe == 0:
    raise configuration.ConfigError(
        f'config.batch_size={config.batch_size} is larger than the training set '
        f'({train.num_examples} examples): lower it.')
  per_model = sum(x.size for x in jax.tree.leaves(run.state.params)) // len(run.trial_names)
  logging.info('%s: %d parameters per model, %d trial(s); %d train / %d validation examples.',
               run.workdir, per_model, len(run.trial_names), train.num_examples, val.num_examples)
  total = spe * config.num_epochs
  progress = logs.Progress(total, config.batch_size, config.log_every_steps)
  if len(tensorboard_dirs) != len(run.trial_names):
    raise ValueError(f'{len(tensorboard_dirs)} TensorBoard folders for {len(run.trial_names)} trials')
  writers = [logs.Writer(d, config) for d in tensorboard_dirs]
  step = int(np.max(jax.device_get(run.state.step)))
  try:
    with _Preemption() as preempted:
      while step < total:
        epoch, start = divmod(step, spe)
        sums = None
        for block in input_pipeline.train_batches(train, config.seed, epoch, start,
                                                  config.steps_per_call):
          run.state, m = run.steps.train(run.state, run.steps.device_put(block, block=True))
          taken = len(block['label'])
          sums, step = _add(sums, m), step + taken
          if progress.due(step, taken):
            records = summarize(sums, 'train')
            if stop_on_nonfinite:
              _check_finite(records, step)
            progress.log(step, epoch + 1, config.num_epochs, records)
          if step % spe and preempted(run.mngr, step):
            if stop_on_nonfinite:
              _check_finite(summarize(sums, 'train'), step)
            checkpointing.save(run.mngr, step, state_tree(run.state), {'histories': run.histories})
            checkpointing.wait(run.mngr)
            return False
        val_records, _ = evaluate_split(run.steps, run.state, val, 'val')
        for history, writer, tr, va in zip(run.histories, writers, summarize(sums, 'train'), val_records):
          record = {'epoch': epoch + 1, 'step': step, **tr,
                    'val_loss': va['val_loss'], 'val_accuracy': va['val_accuracy']}
          if stop_on_nonfinite:
            _check_finite([record], step)
          history.append(record)
          writer.scalars(step, record)
        logs.log_epoch(run.trial_names, [h[-1] for h in run.histories])
        best = run.histories[0][-1] if not run.stacked else None
        checkpointing.save(run.mngr, step, state_tree(run.state), {'histories': run.histories},
                           metrics=best and {'val_accuracy': best['val_accuracy'],
                                             'val_loss': best['val_loss'], 'epoch': epoch + 1})
        if step < total and preempted(run.mngr, step):
          checkpointing.wait(run.mngr)
          return False
      checkpointing.wait(run.mngr)
  finally:
    for w in writers:
      w.close()
  return True


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Trains `config` in `workdir` (resuming what is there), then tests the best
  (or, with `config.test_checkpoint='last'`, the last) checkpoint.

  Writes `results.json` and the report. A finished workdir is only reported, unless
  `config.num_epochs` is higher than it trained: then it continues from its last
  checkpoint (as a resume), and the best is selected and tested anew.
  Returns None if preempted (a checkpoint was saved; rerun to resume).
  """
  workdirs.check(config, workdir)
  with workdirs.Hold(workdir):
    workdirs.claim(config, workdir)
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  results_path = pathlib.Path(workdir) / 'results.json'
  if results_path.exists():
    results = json.loads(results_path.read_text())
    trained = results['history'][-1]['epoch']
    if config.num_epochs <= trained:
      logging.info('%s is finished: %d epochs trained, the config asks for %d, so nothing to train. '
                   'Test accuracy %.4f.', workdir, trained, config.num_epochs, results['test_accuracy'])
      return results
    logging.info('%s is finished at %d epochs; extending it to %d.', workdir, trained, config.num_epochs)
  run = setup(config, workdir)
  try:
    if not fit(run, [workdir]):
      logging.warning('Preempted: checkpoint saved; rerun the same command to resume.')
      return None
    step = run.mngr.latest_step() if config.test_checkpoint == 'last' else run.mngr.best_step()
    test_split = input_pipeline.open_split(run.builder, 'test', config.batch_size,
                                           config.dataset.split_scheme)
    (test,), probs = evaluate_split(run.steps, run.restore(step), test_split, 'test')
  finally:
    run.mngr.close()
  history = run.histories[0]
  chosen = next(r for r in history if r['step'] == step)
  results = {**test, 'best_epoch': chosen['epoch'],
             'best_step': step, 'best_val_accuracy': chosen['val_accuracy'],
             'best_val_loss': chosen['val_loss'], 'history': history, 'config': config.to_dict()}
  if jax.process_index() == 0:
    results_path.write_text(json.dumps(results, indent=2))
    np.save(pathlib.Path(workdir) / 'test_predictions.npy', probs)  # P(face), test split order
    report.write(workdir, results, test_split, probs)
  logging.info('Test accuracy of checkpoint step %d (epoch %d): %.4f on %d images.', step,
               results['best_epoch'], results['test_accuracy'], results['num_test_examples'])
  return results


def _check_finite(records: list[Record], step: int) -> None:
  for record in records:
    for k, v in record.items():
      if isinstance(v, float) and not math.isfinite(v):
        raise NonFiniteLossError(f'{k} is {v} at step {step}; no checkpoint was written for it. '
                                 'Lower config.learning_rate, or check the data.')
