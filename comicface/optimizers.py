"""A config's optimizer and learning-rate schedule, made of optax's transforms and schedules.

    config.optimizer      'adam', 'adamw' or 'sgd'
    config.momentum       sgd: momentum (0: none), with config.nesterov
    config.weight_decay   adamw: decoupled (added to Adam's direction, so scaled by the learning
                          rate); adam and sgd: L2 (added to the gradient, as in PyTorch)
    config.grad_clip_norm the gradient clipped to this global norm first (0: off)
    config.schedule       the learning rate over training: 'constant', or 'cosine' / 'linear'
                          decay to 0 at the last step; after config.warmup_epochs of linear warm-up
    config.schedule_epochs the epochs the schedule spans (0: config.num_epochs); a run stopped
                          before their end (a retrained search winner) follows it as far as it goes
    config.ema_decay      an exponential moving average of the parameters, which evaluation uses
                          (0: off): ema <- decay * ema + (1 - decay) * params after each step,
                          starting at the initial parameters (so without optax.ema's bias correction)
    config.grad_accum_steps the batch computed in that many micro-batches, one update (steps.train_step)

The learning rate, the weight decay and the average's decay are values (the trials of a
stack differ in them), passed at each step; the rest is compiled, whether weight decay
and the average are on included (`switches`: so that without them the update is exactly
the plain optimizer's). A schedule counts the state's own step, so a halving survivor or
a resumed run continues on it where it was.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import optax

NAMES = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine', 'linear')
VALUES = ('learning_rate', 'weight_decay', 'ema_decay')  # passed at each step (the rest of the config is compiled)


def switches(config: ml_collections.ConfigDict) -> dict[str, bool]:
  """Whether each of the VALUES that may be 0 (off) is on: compiled, as is what it changes
  (the update; the state's 'ema_params'), so trials differing in them do not stack."""
  return {'weight_decay': config.weight_decay > 0, 'ema_decay': config.ema_decay > 0}


def scheduled(config: ml_collections.ConfigDict) -> bool:
  """Whether the learning rate of `config` changes over its epochs (a decay or a warm-up)."""
  return (config.schedule, config.warmup_epochs) != ('constant', 0)


def schedule_epochs(config: ml_collections.ConfigDict) -> int:
  """The epochs the schedule of `config` (or of its `steps.static_config`) spans."""
  return config.get('schedule_epochs') or config.get('num_epochs', 0)


def schedule(kind: str, warmup_epochs: float, num_epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate's multiplier at each step: 0 to 1 over the warm-up, then 1
  ('constant') or decaying to 0 at the run's last step."""
  warmup, total = round(warmup_epochs * steps_per_epoch), num_epochs * steps_per_epoch
  if kind == 'constant' and not warmup:
    return lambda step: 1.0
  decay_steps = max(1, total - warmup)
  after = {'constant': optax.constant_schedule(1.0), 'cosine': optax.cosine_decay_schedule(1.0, decay_steps),
           'linear': optax.linear_schedule(1.0, 0.0, decay_steps)}[kind]
  return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup]) if warmup else after


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The update of `config`'s optimizer: `init` its state, `update` the parameters' change."""
  name: str
  momentum: float
  nesterov: bool
  grad_clip_norm: float
  decay: bool  # whether there is weight decay (its amount is a value)
  schedule: optax.Schedule
  ema: bool  # whether the state keeps the parameters' average (its decay is a value)

  @classmethod
  def of(cls, config: ml_collections.ConfigDict, steps_per_epoch: int) -> Optimizer:
    """The optimizer of `config` (or of its `steps.static_config`), for a run of that many steps an epoch."""
    on = switches(config)
    return cls(config.optimizer, config.momentum, config.nesterov, config.grad_clip_norm, on['weight_decay'],
               schedule(config.schedule, config.warmup_epochs, schedule_epochs(config), steps_per_epoch),
               on['ema_decay'])

  @property
  def _stateful(self) -> optax.GradientTransformation:
    """The part that keeps a state: Adam's moments, SGD's momentum, or none."""
    if self.name == 'sgd':
      return optax.trace(self.momentum, self.nesterov) if self.momentum else optax.identity()
    return optax.scale_by_adam()

  def init(self, params: Any) -> optax.OptState:
    return self._stateful.init(params)

  def update(self, grads: Any, opt_state: optax.OptState, params: Any, step: jax.Array,
             learning_rate: jax.Array, weight_decay: jax.Array) -> tuple[Any, optax.OptState]:
    """(the parameters' change, the new state) at train step `step`."""
    stateless = lambda tx, tree: tx.update(tree, optax.EmptyState(), params)[0]
    if self.grad_clip_norm:
      grads = stateless(optax.clip_by_global_norm(self.grad_clip_norm), grads)
    if self.decay and self.name != 'adamw':
      grads = stateless(optax.add_decayed_weights(weight_decay), grads)
    direction, opt_state = self._stateful.update(grads, opt_state, params)
    if self.decay and self.name == 'adamw':
      direction = stateless(optax.add_decayed_weights(weight_decay), direction)
    rate = learning_rate * self.schedule(step)
    return jax.tree.map(lambda d: -rate * d, direction), opt_state
