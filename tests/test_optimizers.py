"""Optimizers and schedules from optax: the studies' own still compute what they did, the
ResNet's AdamW with warm-up and cosine decay and a stack of momentum SGD resume exactly,
and a halving survivor keeps its place on its schedule."""
import json
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from comicface import configuration, optimizers, search, search_space, train
from configs import default
from conftest import ROOT, TINY_PAIRS, tiny_config
from test_reliability import TINY, assert_same_params, final_params, main_cmd, run_main, wait_for
from test_steps import make, random_batches, train_over, train_stacked


def test_every_config_field_has_one_role():
  """The roles table covers the default config: a new field must say what it is."""
  config = default.get_config()

  def leaves(d, prefix=''):
    for k, v in d.items():
      yield from leaves(v, f'{prefix}{k}.') if isinstance(v, dict) and f'{prefix}{k}' not in configuration.ROLES \
          else [f'{prefix}{k}']
  assert sorted(leaves(config.to_dict())) == sorted(configuration.ROLES)
  assert set(configuration.ROLES.values()) == {'static', 'value', 'identity', 'budget', 'speed', 'free'}


@pytest.mark.slow  # compiles several steps of each kind
@pytest.mark.parametrize('name', ['adam', 'sgd'])
def test_the_studies_optimizers_update_as_before(name):
  """Adam and plain SGD at a constant rate, as the studies have them: the update of the earlier
  code, `params - lr * direction` of optax's scale_by_adam (or the gradient), here written out
  as another program, so equal to float rounding (bench/same_results.py compares the studies'
  whole runs with an earlier checkout, bitwise)."""
  config = tiny_config(optimizer=name)
  steps, host = make(config), random_batches(config, 3)
  state, _ = train_over(steps, config, host, (0, 1, 2, 3))
  reference = steps.init(jax.random.PRNGKey(config.seed))
  tx = {'adam': optax.scale_by_adam, 'sgd': optax.identity}[name]()
  model = steps_model(config)
  for i in range(3):
    reference = reference_step(reference, {k: v[i] for k, v in host.items()}, model, tx, config.learning_rate)
  for a, b in zip(jax.tree.leaves(jax.device_get(reference['params'])), jax.tree.leaves(state['params'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # an update is about lr = 1e-2


def steps_model(config):
  from comicface import models  # pylint: disable=g-import-not-at-top
  return models.create(config.model.to_dict(), 2, config.dtype, 'cpu')


def reference_step(state, batch, model, tx, learning_rate):
  """The train step of the previous release: the direction scaled by -lr by hand."""
  from comicface import steps as steps_lib  # pylint: disable=g-import-not-at-top
  rng = jax.random.fold_in(state['rng'], state['step'])

  def loss_fn(params):
    logits, _ = steps_lib.apply_model(model, {**state, 'params': params}, jnp.asarray(batch['image']), train=True,
                                      rng=rng, slice_images=4)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
  grads = jax.grad(loss_fn)(state['params'])
  direction, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], jax.tree.map(lambda d: -learning_rate * d, direction))
  return {**state, 'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}


@pytest.mark.parametrize('kind, at, expected', [
    ('constant', [0, 5, 9], [1.0, 1.0, 1.0]), ('cosine', [0, 10, 20], [0.0, 1.0, 0.0]),
    ('linear', [0, 10, 15, 20], [0.0, 1.0, 0.5, 0.0])])
def test_schedules_warm_up_then_decay_to_zero_at_the_last_step(kind, at, expected):
  warmup = 0 if kind == 'constant' else 1  # 10 steps an epoch: warm-up over steps 0-10, 2 epochs in all
  schedule = optimizers.schedule(kind, warmup, 2, 10)
  np.testing.assert_allclose([float(schedule(jnp.asarray(s))) for s in at], expected, atol=1e-6)


@pytest.mark.slow  # compiles several steps of each kind
def test_weight_decay_is_a_value_of_the_stack():
  """Two trials of one stack differing in weight decay (AdamW) end as each does alone, and apart."""
  configs = [tiny_config(optimizer='adamw', weight_decay=wd) for wd in (0.1, 0.5)]
  host = random_batches(configs[0], 2)
  state, _ = train_stacked(configs, host)
  alone = [train_over(make(c), c, host, (0, 1, 2))[0] for c in configs]
  for t in range(2):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 jax.tree.map(lambda x: x[t], state)['params'], alone[t]['params'])
  assert not np.allclose(jax.tree.leaves(alone[0]['params'])[0], jax.tree.leaves(alone[1]['params'])[0])


RESNET = ['--config=configs/resnet.py:runlocal', f'--config.dataset.synthetic_pairs={TINY_PAIRS}',
          '--config.batch_size=8', '--config.log_every_steps=1', '--config.checkpoint_seconds=0',
          '--config.learning_rate=0.003', '--config.num_epochs=3']
SGD_STACK = [*TINY, '--config.optimizer=sgd', '--config.momentum=0.9', '--config.nesterov=True',
             '--config.num_epochs=3', '--config.grid.learning_rate=(0.01, 0.003)', '--config.grid_parallel=stacked']


@pytest.mark.slow
@pytest.mark.parametrize('flags, trials', [(RESNET, None), (SGD_STACK, 2)], ids=['resnet_adamw_cosine', 'sgd_stack'])
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path, flags, trials):
  straight = tmp_path / 'straight'
  r = run_main(straight, base=flags)
  assert r.returncode == 0, r.stderr[-3000:]
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, base=flags), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  wait_for(proc, 'epoch 2/3 step')  # in its second epoch, once every member's first checkpoint is written:

  def saved() -> bool:
    folders = list(workdir.glob('**/checkpoints'))
    return len(folders) == (trials or 1) and all(any(p.name.isdigit() for p in f.iterdir()) for f in folders)
  deadline = time.time() + 60
  while not saved() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -9 and not (workdir / 'results.json').exists()  # the kill took
  rerun = run_main(workdir, base=flags)
  assert rerun.returncode == 0 and 'resumed from step' in rerun.stderr, rerun.stderr[-3000:]
  folders = ([p.parent.name for p in sorted((straight / 'trials').glob('*/trial.json'))] if trials else [''])
  assert len(folders) == (trials or 1)
  for name in folders:
    a, b = (d / 'trials' / name if name else d for d in (workdir, straight))
    assert_same_params(a, b)
  x, y = (json.loads((d / 'results.json').read_text()) for d in (workdir, straight))
  assert x['test_accuracy'] == y['test_accuracy'] and x['history'] == y['history']


@pytest.mark.slow
def test_a_halving_survivor_keeps_its_place_on_its_cosine_schedule(tmp_path):
  """Cosine decay over the trials' 3 epochs: each survivor, sliced out at the rung (epoch 2)
  and trained on, ends where its trial trained alone for 3 epochs ends."""
  config = tiny_config(num_epochs=3, search='halving', schedule='cosine', warmup_epochs=1.0,
                       grid_parallel='stacked')
  config.grid.learning_rate = (1e-2, 3e-3)
  config.grid.model = {'dropout_rate': (0.0, 0.5)}
  config.halving.factor = 2
  results = search.run(config, str(tmp_path / 'halving'))
  (first, _) = results['rungs']
  assert first['epochs'] == 2 and len(first['survivors']) == 2  # the premise: survivors went on past a rung
  trials = {t.name: t for t in search_space.expand(config)}
  for name in first['survivors']:
    train.train_and_evaluate(trials[name].config, str(tmp_path / name))
    (step_a, a), (step_b, b) = final_params(tmp_path / 'halving' / 'trials' / name), final_params(tmp_path / name)
    assert step_a == step_b
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5), a, b)


@pytest.mark.slow  # two whole runs a case
@pytest.mark.parametrize('schedule, warmup, selected', [('cosine', 0.0, 2), ('linear', 2.0, 1)],
                         ids=['cosine_selected_before_its_end', 'warmup_longer_than_the_selected_epoch'])
def test_a_retrained_winner_is_its_trial_at_the_selected_epoch(schedule, warmup, selected, tmp_path):
  """A trial of 3 epochs selected at an earlier epoch, retrained on its own training split
  (search.results.retrain_config): bitwise its checkpoint at that epoch, the learning rate
  followed at every step (a warm-up that outlasts the selected epoch included)."""
  from comicface.search import results  # pylint: disable=g-import-not-at-top
  trial = tiny_config(num_epochs=3, schedule=schedule, warmup_epochs=warmup, keep_checkpoints=3)
  history = train.train_and_evaluate(trial, str(tmp_path / 'trial'))['history']
  retrained = train.train_and_evaluate(results.retrain_config(trial, selected, ('train',)), str(tmp_path / 'final'))
  step = history[selected - 1]['step']
  assert retrained['tested_step'] == step and retrained['history'] == history[:selected]
  assert_same_params(tmp_path / 'trial', tmp_path / 'final', step)
