"""The train state, the pure steps, and their jitted, sharded forms.

The state is a plain pytree:

    {'params', 'opt_state', 'model_state' (e.g. batch statistics), 'step', 'rng'}

and, with config.ema_decay, 'ema_params': the parameters' moving average, which evaluation
and prediction use. The values a trial is trained with, `hparams = {'learning_rate',
<the model's VALUES>, ...}`, are data beside it. A stack of trials carries a leading trial
axis on both; its steps are `jax.vmap`ped over that axis, and every trial sees the same
batches. The model and the optimizer are closed over by the jitted steps, which
key on shapes alone.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from comicface import augment as augment_lib
from comicface import configuration
from comicface import models
from comicface import optimizers

State = dict[str, Any]
HParams = dict[str, jax.Array]
Metrics = dict[str, jax.Array]  # sums: 'loss', 'correct', 'count'
Record = dict[str, float]


def make_mesh(trials: int = 1, devices: list | None = None) -> jax.sharding.Mesh:
  """`devices` (default: all) on ('trial', 'data'); stacked trials spread over 'trial'
  where the counts divide (one process). Auto axes: Explicit ones break Flax's dropout."""
  devices = devices or jax.devices()
  n = len(devices)
  t = math.gcd(trials, n) if jax.process_count() == 1 else 1
  return jax.sharding.Mesh(np.asarray(devices).reshape(t, n // t), ('trial', 'data'),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def hyperparameters(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The values of `config` that a stack of trials may differ in (`configuration.ROLES`)."""
  return {k.split('.')[-1]: configuration.get(config, k) for k in configuration.fields(config, 'value')}


def static_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """What `Steps` is built from: the fields whose role is 'static' or 'speed'
  (`configuration.ROLES`), the epochs a schedule spans where it changes over them, and
  which of the values that can be off are on (`optimizers.switches`: weight decay, the
  average). Configs equal in it share compiled steps."""
  fields = configuration.fields(config, 'static', 'speed')
  spans = {'schedule_epochs': optimizers.schedule_epochs(config)} if optimizers.scheduled(config) else {}
  return ml_collections.FrozenConfigDict({**configuration.subset(config, fields), **spans,
                                          **optimizers.switches(config)})


def resolve_kernels(kernels: str, platform: str | None = None) -> str:
  """config.speed.kernels, with 'auto' resolved for `platform` (default: JAX's backend):
  'cpu' on CPUs, else 'xla' (Flax's own layers)."""
  if kernels != 'auto':
    return kernels
  return 'cpu' if (platform or jax.default_backend()) == 'cpu' else 'xla'


CALL_FLOPS = 4e9  # 'auto' steps per call: enough steps to make a call this long, at most 32


def resolve_steps_per_call(setting: int | str, cost: models.Cost, batch_size: int, platform: str) -> int:
  """config.speed.steps_per_call, with 'auto' resolved: one step per call where a step
  (about 3x its forward FLOPs) hides a dispatch, else as many as make CALL_FLOPS (at most
  32). On CPUs a model with convolutions takes one: XLA:CPU runs a convolution inside a
  loop on a much slower path."""
  if setting != 'auto':
    return int(setting)
  if platform == 'cpu' and cost.convolutions:
    return 1
  return int(min(32, max(1, CALL_FLOPS // (3 * cost.flops * batch_size))))


def strided_slices(x: jax.Array, size: int) -> jax.Array:
  """(b, ...) -> (b / size, size, ...): slice i holds items i, i + b/size, ..., so
  where the batch is sharded over devices in blocks, each device keeps its own
  share of every slice. `size` must divide b."""
  return jnp.swapaxes(x.reshape(size, x.shape[0] // size, *x.shape[1:]), 0, 1)


def merge_slices(y: jax.Array) -> jax.Array:
  """The inverse of `strided_slices`: (n, size, ...) -> (n * size, ...) in batch order."""
  return jnp.swapaxes(y, 0, 1).reshape(-1, *y.shape[2:])


def init_state(rng: jax.Array, *, model: nn.Module, opt: optimizers.Optimizer,
               image_shape: tuple[int, ...]) -> State:
  """A fresh state: parameters (and model state) from `rng`, the dropout key, and where
  `opt.ema`, the parameters' average (starting at the parameters)."""
  params_rng, dropout_rng = jax.random.split(rng)
  variables = dict(model.init(params_rng, jnp.zeros((1, *image_shape), jnp.uint8)))
  params = variables.pop('params')
  return {'params': params, 'opt_state': opt.init(params), 'model_state': variables,
          'step': jnp.zeros((), jnp.int32), 'rng': dropout_rng,
          **({'ema_params': jax.tree.map(jnp.copy, params)} if opt.ema else {})}


def apply_model(model: nn.Module, state: State, images: jax.Array, *, train: bool = False,
                rng: jax.Array | None = None, slice_images: int | None = None) -> tuple[jax.Array, dict]:
  """(logits, updated model state). Evaluation (not `train`) uses the parameters' average
  where the state keeps one ('ema_params').

  `slice_images` (set with the CPU kernels: 0 or more) draws each example's dropout from
  a key of its own (the batch's key split by position), so that the model can run on
  independent slices of that many images (`strided_slices`) and compute what the whole
  batch does: XLA:CPU runs the slices side by side on all cores, where one convolution
  of the whole batch keeps about one busy. None: one draw for the whole batch, as Flax
  does (the accelerators' path). A model with state (batch statistics) sees the whole batch.
  """
  params = state['params'] if train or 'ema_params' not in state else state['ema_params']
  variables = {'params': params, **state['model_state']}
  if state['model_state'] or slice_images is None:
    mutable = list(state['model_state']) if train and state['model_state'] else False
    out = model.apply(variables, images, train=train, rngs={'dropout': rng} if train else {}, mutable=mutable)
    return out if mutable else (out, state['model_state'])

  def forward(x, keys):
    if not train:
      return model.apply(variables, x)
    one = lambda xi, key: model.apply(variables, xi[None], train=True, rngs={'dropout': key})[0]
    return jax.vmap(one)(x, keys)
  b = images.shape[0]
  keys = jax.random.split(rng, b) if train else jnp.zeros((b,))
  if slice_images and b > slice_images and b % slice_images == 0:
    parts = [forward(x, k) for x, k in zip(strided_slices(images, slice_images), strided_slices(keys, slice_images))]
    return merge_slices(jnp.stack(parts)), state['model_state']
  return forward(images, keys), state['model_state']


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Each example's cross-entropy against its label: a class index, or soft targets
  [classes] (after mixup or cutmix)."""
  if labels.ndim == logits.ndim:
    return optax.softmax_cross_entropy(logits, labels)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_sums(logits: jax.Array, labels: jax.Array) -> Metrics:
  """What training records of a batch: summed loss and right answers (the argmax of a soft
  label counting as the class), and its size."""
  classes = jnp.argmax(labels, -1) if labels.ndim == logits.ndim else labels
  return {'loss': jnp.sum(cross_entropy(logits, labels)),
          'correct': jnp.sum(jnp.argmax(logits, -1) == classes).astype(jnp.float32),
          'count': jnp.asarray(labels.shape[0], jnp.float32)}


def summarize(sums: Metrics, prefix: str) -> list[Record]:
  """Mean loss and accuracy of training sums, one record per trial (pulled from the devices)."""
  loss, correct, count = (np.atleast_1d(jax.device_get(sums[k])) for k in ('loss', 'correct', 'count'))
  return [{f'{prefix}_loss': float(l / n), f'{prefix}_accuracy': float(c / n)}
          for l, c, n in zip(loss, correct, count)]


def mean_records(histories: Sequence[Sequence[Record]]) -> list[Record]:
  """Per epoch, the mean of each float field over several members' histories (the seeds of
  a trial), over the epochs that all of them have; one history is returned as it is."""
  if len(histories) == 1:
    return list(histories[0])
  return [{k: float(np.mean([r[k] for r in records])) if isinstance(v, float) else v for k, v in records[0].items()}
          for records in zip(*histories)]


def train_step(state: State, hparams: HParams, batch: dict[str, jax.Array], *,
               model_fn: Callable[..., nn.Module], opt: optimizers.Optimizer, augment: augment_lib.Ops = (),
               num_classes: int = 0, accumulate: int = 1,
               slice_images: int | None = None) -> tuple[State, Metrics]:
  """One optimizer step on the mean cross-entropy; returns sums for the metrics.

  `model_fn(**values)` builds the model with the trial's values of its own (its dropout
  rate). `augment` (config.augment, parsed) transforms the batch first, from a key split
  off the step's (the draws of dropout stay as they are without it); labels become soft
  targets over `num_classes` where an op mixes them. `accumulate` (config.grad_accum_steps)
  > 1 computes the (augmented) batch as that many micro-batches one after another
  (`strided_slices`, a lax.scan), their gradients averaged into one update; a model's
  batch statistics are updated by each micro-batch in turn. Where the state keeps the
  parameters' average, it moves by hparams['ema_decay'].
  """
  rng = jax.random.fold_in(state['rng'], state['step'])
  images, labels = batch['image'], batch['label']
  if augment:
    rng, augment_rng = jax.random.split(rng)
    images, labels = augment_lib.apply(augment, augment_rng, images, labels, num_classes)
  model = model_fn(**{k: v for k, v in hparams.items() if k not in optimizers.VALUES})

  def gradients(model_state, images, labels, rng):
    def loss_fn(params):
      logits, new_model_state = apply_model(model, {**state, 'params': params, 'model_state': model_state}, images,
                                            train=True, rng=rng, slice_images=slice_images)
      return cross_entropy(logits, labels).mean(), (logits, new_model_state)
    (_, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    return grads, model_state, train_sums(logits, labels)

  if accumulate == 1:
    grads, model_state, sums = gradients(state['model_state'], images, labels, rng)
  else:
    def micro_step(carry, micro):
      total, model_state = carry
      grads, model_state, sums = gradients(model_state, *micro)
      return (jax.tree.map(jnp.add, total, grads), model_state), sums
    size = images.shape[0] // accumulate
    micro = (strided_slices(images, size), strided_slices(labels, size), jax.random.split(rng, accumulate))
    zeros = jax.tree.map(jnp.zeros_like, state['params'])
    (total, model_state), sums = jax.lax.scan(micro_step, (zeros, state['model_state']), micro)
    grads, sums = jax.tree.map(lambda g: g / accumulate, total), jax.tree.map(lambda m: m.sum(0), sums)
  updates, opt_state = opt.update(grads, state['opt_state'], state['params'], state['step'],
                                  hparams['learning_rate'], hparams['weight_decay'])
  params = optax.apply_updates(state['params'], updates)
  new = {**state, 'params': params, 'opt_state': opt_state, 'model_state': model_state,
         'step': state['step'] + 1}
  if opt.ema:  # ema <- decay * ema + (1 - decay) * params, from the initial parameters (no bias correction)
    new['ema_params'] = optax.incremental_update(params, state['ema_params'], 1 - hparams['ema_decay'])
  return new, sums


def train_block(state: State, hparams: HParams, batches: dict[str, jax.Array], sums: Metrics,
                **step_kwargs: Any) -> tuple[State, Metrics]:
  """`train_step` over the leading axis of `batches` in one call (a `lax.scan` where there
  are several: for models whose step is shorter than a dispatch); returns the state and
  `sums` (the epoch's so far) plus the block's.

  A block of one is a plain step: XLA:CPU runs convolutions inside a loop on a much
  slower path (see `resolve_steps_per_call`).
  """
  step = functools.partial(train_step, **step_kwargs)
  if batches['label'].shape[0] == 1:
    state, metrics = step(state, hparams, jax.tree.map(lambda x: x[0], batches))
  else:
    state, metrics = jax.lax.scan(lambda s, b: step(s, hparams, b), state, batches)
    metrics = jax.tree.map(lambda m: m.sum(0), metrics)
  return state, jax.tree.map(jnp.add, sums, metrics)


def eval_step(state: State, images: jax.Array, *, model: nn.Module) -> jax.Array:
  """The log-probabilities of each image's classes."""
  return jax.nn.log_softmax(apply_model(model, state, images)[0])


def predict_step(state: State, images: jax.Array, *, model: nn.Module, chunk: int = 0) -> jax.Array:
  """Class probabilities per image, `chunk` images per forward pass (0: all at once), so
  that a large batch holds no more activations at a time than a training batch does."""
  forward = lambda x: jax.nn.softmax(apply_model(model, state, x)[0])
  n = images.shape[0]
  if not chunk or n <= chunk or n % chunk:
    return forward(images)
  return merge_slices(jax.lax.map(forward, strided_slices(images, chunk)))


def resident_block(data: dict[str, jax.Array], epoch: dict[str, jax.Array], step: jax.Array, count: int,
                   batch_size: int, image_shape: tuple[int, ...]) -> dict[str, jax.Array]:
  """The `count` batches that start at train step `step`, gathered from the resident `data`
  (each image a flat row: feeds.flat): `epoch['order']` holds the epoch's positions in
  `data`, batch after batch, from its step `epoch['first']` on."""
  start = (step - epoch['first']) * batch_size
  positions = jax.lax.dynamic_slice_in_dim(epoch['order'], start, count * batch_size).reshape(count, batch_size)
  return {'image': data['image'][positions].reshape(count, batch_size, *image_shape), 'label': data['label'][positions]}


class Steps:
  """The jitted init, train, eval and predict steps of a config's `static_config` on `mesh`,
  vmapped over a trial axis if `stacked`, as `platform` (default: JAX's backend) runs
  them. Runs equal in their static config share one (a grid's trials of one shape
  compile once).

  `train` takes a block of batches on the devices and the epoch's sums so far (see
  `train_block`); `train_resident` gathers its block itself from a build resident on the
  devices (`resident_block`), and `eval_resident` its batch (row `index` of `positions`),
  so that neither needs anything from the host. Their inputs' shapes are the build's, whatever the split: they compile
  once per build.
  """

  def __init__(self, config: ml_collections.FrozenConfigDict, num_classes: int, image_shape: tuple[int, ...],
               mesh: jax.sharding.Mesh, stacked: bool = False, platform: str | None = None,
               steps_per_epoch: int = 0):
    platform = platform or jax.default_backend()
    kernels = resolve_kernels(config.speed.kernels, platform)
    make = functools.partial(models.create, config.model.to_dict(), num_classes, config.dtype, kernels)
    cost = models.cost(config.model.to_dict(), num_classes, image_shape, config.dtype)
    opt = optimizers.Optimizer.of(config, steps_per_epoch)
    self.stacked = stacked
    self.steps_per_call = resolve_steps_per_call(config.speed.steps_per_call, cost, config.batch_size, platform)
    # an evaluation call takes what a train call does (of micro-batches, where it accumulates)
    self.eval_batch = config.batch_size // config.grad_accum_steps * self.steps_per_call
    self.data = NamedSharding(mesh, P('data'))
    self.blocks = NamedSharding(mesh, P(None, 'data'))
    self.replicated = NamedSharding(mesh, P())
    self.state_sharding = NamedSharding(mesh, P('trial')) if stacked else self.replicated
    slice_images = config.speed.cpu_slice_images * mesh.shape['data'] if kernels == 'cpu' else None
    init = functools.partial(init_state, model=make(), opt=opt, image_shape=tuple(image_shape))
    train = functools.partial(train_block, model_fn=functools.partial(make, 'train'), opt=opt,
                              augment=augment_lib.parse(config.augment), num_classes=num_classes,
                              accumulate=config.grad_accum_steps, slice_images=slice_images)
    evaluate = functools.partial(eval_step, model=make('predict'))
    if stacked:
      init, train = jax.vmap(init), jax.vmap(train, in_axes=(0, 0, None, 0))
      evaluate = jax.vmap(evaluate, in_axes=(0, None))
    batch_size = config.batch_size

    def train_resident(state, hparams, data, epoch, sums, count):
      step = jnp.ravel(state['step'])[0]  # every trial of a stack is at the same step
      block = resident_block(data, epoch, step, count, batch_size, image_shape)
      return train(state, hparams, jax.lax.with_sharding_constraint(block, self.blocks), sums)

    def eval_resident(state, images, positions, index):
      batch = images[positions[index]].reshape(-1, *image_shape)
      return evaluate(state, jax.lax.with_sharding_constraint(batch, self.data)), index + 1
    train_out = (self.state_sharding, self.state_sharding)
    self.init = jax.jit(init, out_shardings=self.state_sharding)
    self.train = jax.jit(train, out_shardings=train_out, donate_argnums=0)
    self.train_resident = jax.jit(train_resident, out_shardings=train_out, donate_argnums=0,
                                  static_argnames='count')
    self.eval = jax.jit(evaluate, out_shardings=self.replicated)
    self.eval_resident = jax.jit(eval_resident, out_shardings=(self.replicated, self.replicated))
    chunk = config.speed.predict_chunk if kernels == 'cpu' else 0
    self.predict = jax.jit(functools.partial(predict_step, model=make('predict'), chunk=chunk),
                           out_shardings=self.data)

  def device_put(self, batch: dict[str, np.ndarray], block: bool = False) -> dict[str, jax.Array]:
    """Builds global arrays from each process's slice of the batch (or block of batches)."""
    sharding = self.blocks if block else self.data
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

  def put_hparams(self, hparams: list[dict[str, float]]) -> HParams:
    """The values of one trial (a list of one) or of a stack of trials, on the mesh."""
    values = {k: np.asarray([h[k] for h in hparams], np.float32) for k in hparams[0]}
    return jax.device_put(values if self.stacked else {k: v[0] for k, v in values.items()}, self.state_sharding)

  def put_sums(self, sums: list[dict[str, float]] | int) -> Metrics:
    """Training sums to start an epoch from: of each member (a list), or zeros for `sums` members."""
    return self.put_hparams(sums if isinstance(sums, list) else [dict.fromkeys(('loss', 'correct', 'count'), 0.0)] * sums)
