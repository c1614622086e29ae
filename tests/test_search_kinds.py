"""The searches beyond the grid: random draws, successive halving on the stack, TPE, early
stopping, seeds and the paired test, resumption and raised budgets."""
import importlib.util
import json
import os
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import comicface
from comicface import actions, app, checkpointing, configuration, errors, search, search_space, train
from comicface.search import plans
from configs import cnn_grid
from conftest import ROOT, override, tiny_config
from test_reliability import final_params, wait_for


def tiny_search(kind: str, **overrides):
  """A tiny CNN search of `kind` over 4 trials: 2 learning rates x 2 dropout rates, 3 epochs."""
  config = tiny_config(**{'num_epochs': 3, 'search': kind, **overrides})
  config.grid.learning_rate = (1e-2, 3e-3)
  config.grid.model = {'dropout_rate': (0.0, 0.5)}
  config.halving.factor = 2
  return config


def test_every_search_kind_has_its_plan():
  assert set(plans.PLANS) == set(configuration.SEARCHES)


def test_random_draws_are_seeded_and_extend_without_changing():
  config = cnn_grid.get_config()
  config.grid.learning_rate = 'log_uniform(1e-4, 1e-1)'
  config.grid.model.filters_1 = 'int_uniform(50, 250)'
  first = [search_space.draw(config, i) for i in range(6)]
  again = [search_space.draw(config, i) for i in range(8)]
  assert [t.values for t in first] == [t.values for t in again[:6]]  # the same config, the same trials
  for t in again:
    assert 1e-4 <= t.values['learning_rate'] <= 1e-1 and isinstance(t.values['model.filters_1'], int)
    assert 50 <= t.config.model.filters_1 <= 250 and t.values['model.filters_2'] in (25, 50)
  assert len({t.values['learning_rate'] for t in again}) == 8
  other = override(cnn_grid.get_config(), seed=1)
  other.grid.learning_rate = 'log_uniform(1e-4, 1e-1)'
  assert search_space.draw(other, 0).values != search_space.draw(config, 0).values  # seeded
  with pytest.raises(errors.ConfigError, match='is a range, which a grid cannot enumerate'):
    search_space.expand(config)


@pytest.mark.parametrize('spec', ['uniform(1, 1)', 'log_uniform(0, 1)', 'normal(0, 1)'])
def test_bad_ranges_are_named(spec):
  config = cnn_grid.get_config()
  config.grid.learning_rate = spec
  with pytest.raises(errors.ConfigError, match=r'config.grid.learning_rate=.* is invalid'):
    search_space.axes(config)


@pytest.mark.parametrize('kind, momentum', [('grid', (0.0, 0.9)), ('halving', (0.0, 0.9)),
                                            ('bayesian', 'uniform(0, 0.9)')])
def test_values_valid_alone_but_not_together_are_refused_before_anything_is_written(tmp_path, capsys, kind, momentum):
  """optimizer sgd or adam, momentum 0 to 0.9: each value is valid alone, adam with momentum is
  not. The grid, Hyperband (whose draws would meet it only as they are drawn) and TPE (a range's
  end) are refused in one message before the workdir, the plan or the stand-in exist."""
  config = tiny_search(kind, **{'halving.brackets': 2})
  config.grid = ml_collections.ConfigDict({'optimizer': ('sgd', 'adam'), 'momentum': momentum})
  for optimizer, value in (('sgd', 0.9), ('adam', 0.0)):  # the premise: each value alone is valid
    configuration.validate(override(tiny_config(), optimizer=optimizer, momentum=value))
  if kind == 'halving':  # the premise: Hyperband's draws include the invalid pair, which it used to meet late
    with pytest.raises(errors.ConfigError):
      for i in range(20):
        search_space.draw(config, i, stream=1)
  workdir = tmp_path / 'w'
  assert app.run(config, str(workdir)) == 1
  message = [line for line in capsys.readouterr().err.splitlines() if 'Error' in line]
  assert len(message) == 1 and message[0].startswith("ConfigError: config.grid makes a trial of momentum=0.9, "
                                                     "optimizer='adam', which is invalid: config.momentum=0.9"), message
  assert not workdir.exists()


@pytest.mark.parametrize('max_epochs, min_epochs, factor, rungs', [
    (10, 1, 3, [1, 3, 10]), (9, 1, 3, [1, 3, 9]), (3, 1, 2, [2, 3]), (30, 1, 3, [1, 3, 10, 30]),
    (10, 4, 3, [10]), (10, 3, 3, [3, 10]), (5, 5, 3, [5])])
def test_halving_rungs(max_epochs, min_epochs, factor, rungs):
  assert plans.rung_epochs(max_epochs, min_epochs, factor) == rungs


def _rule(**kw):
  return ml_collections.ConfigDict({'monitor': 'val_loss', 'mode': 'auto', 'patience': 0, 'min_delta': 0.0,
                                    'start_from_epoch': 0, **kw})


def _stop_epoch(rule, curve, key='val_loss'):
  """The epoch (1-based) after which the rule stops a run with this curve, or None."""
  for n in range(1, len(curve) + 1):
    if actions.stops_early(rule, [{key: v} for v in curve[:n]]):
      return n
  return None


@pytest.mark.parametrize('rule, curve, stop', [
    # Keras: wait += 1 each epoch, 0 on an improvement; stop when wait >= patience, never at epoch index 0.
    (_rule(), [1.0, 0.9, 0.95, 0.8], 3),                      # patience 0: the first epoch without improvement
    (_rule(), [1.0, 1.2], 2),
    (_rule(patience=1), [1.0, 0.9, 0.95, 0.8], 3),            # as patience 0: wait counts the bad epoch first
    (_rule(patience=2), [1.0, 0.9, 0.95, 0.8, 0.85, 0.86], 6),  # one bad epoch forgiven, two not
    (_rule(patience=2), [1.0, 1.1, 1.2, 1.3], 3),
    (_rule(min_delta=0.05), [1.0, 0.97, 0.9], 2),             # 0.97 is not 0.05 better than 1.0
    (_rule(min_delta=0.05), [1.0, 0.94, 0.88, 0.84], 4),
    (_rule(start_from_epoch=2), [1.0, 1.5, 2.0, 2.5, 1.0], 4),  # epochs 0 and 1 are not watched
    (_rule(patience=3), [1.0, 0.9, 0.8, 0.7], None),
])
def test_early_stopping_stops_where_keras_does(rule, curve, stop):
  assert _stop_epoch(rule, curve) == stop


def test_early_stopping_mode_follows_the_metric():
  accuracy = [0.5, 0.6, 0.55, 0.7]
  assert _stop_epoch(_rule(monitor='val_accuracy'), accuracy, 'val_accuracy') == 3  # auto: max for accuracy
  assert _stop_epoch(_rule(monitor='val_accuracy', mode='min'), accuracy, 'val_accuracy') == 2
  assert _stop_epoch(_rule(monitor=''), [1, 2, 3]) is None  # off


@pytest.mark.slow
def test_a_stopped_trial_drops_out_of_its_stack(tmp_path):
  """Early stopping on validation loss (min_delta 1e-4): the trial that barely learns
  (lr 1e-9) stops after 2 epochs and leaves the stack; the other trains all 4."""
  config = tiny_config(num_epochs=4, grid_parallel='stacked', **{'model.dropout_rate': 0.0,
                                                                  'early_stopping.monitor': 'val_loss',
                                                                  'early_stopping.min_delta': 1e-4})
  config.grid = ml_collections.ConfigDict({'learning_rate': (1e-9, 1e-2)})
  results = search.run(config, str(tmp_path))
  trials = {t['trial'].split('_')[0]: t for t in results['trials']}
  assert trials['000']['stopped_early'] and trials['000']['epochs_trained'] == 2
  assert not trials['001']['stopped_early'] and trials['001']['epochs_trained'] == 4
  assert results['trial_epochs'] == 6


@pytest.fixture(scope='module')
def halving_stacked(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('halving')
  return workdir, search.run(tiny_search('halving', grid_parallel='stacked'), str(workdir))


@pytest.mark.slow
def test_halving_keeps_the_best_and_spends_less(halving_stacked):
  _, results = halving_stacked
  (first, last) = results['rungs']
  assert first['epochs'] == 2 and len(first['trials']) == 4 and len(first['survivors']) == 2
  assert last['epochs'] == 3 and last['trials'] == first['survivors'] and results['winner'] in last['survivors']
  assert results['trial_epochs'] == 4 * 2 + 2 * 1 < 4 * 3
  epochs = {t['trial']: t['epochs_trained'] for t in results['trials']}
  assert all(epochs[name] == (3 if name in first['survivors'] else 2) for name in epochs)


@pytest.mark.slow
def test_halving_survivors_go_on_as_a_sequential_run_of_their_trial(halving_stacked, tmp_path):
  """Each survivor, sliced out of its stack at the rung with its parameters and optimizer
  state, ends where a run of that trial alone ends (float tolerance)."""
  workdir, results = halving_stacked
  trials = {t.name: t for t in search_space.expand(tiny_search('halving'))}
  for name in results['rungs'][0]['survivors']:
    alone = tmp_path / name
    train.train_and_evaluate(trials[name].config, str(alone))
    (step_a, a), (step_b, b) = final_params(workdir / 'trials' / name), final_params(alone)
    assert step_a == step_b
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5), a, b)


@pytest.mark.slow
def test_halving_killed_mid_rung_resumes_to_the_same_end(halving_stacked, tmp_path):
  workdir = tmp_path / 'w'
  script = ('import sys\n'
            'from absl import logging\n'
            'logging.set_verbosity(logging.INFO)\n'
            'from test_search_kinds import tiny_search\n'
            'from comicface import search\n'
            'search.run(tiny_search("halving", grid_parallel="stacked", log_every_steps=1), sys.argv[1])\n')
  env = {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{ROOT / "tests"}'}
  proc = subprocess.Popen([sys.executable, '-c', script, str(workdir)], env=env, cwd=ROOT, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  wait_for(proc, 'epoch 3/3 step')  # the second rung: past the first's 2 epochs
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and not (workdir / 'results.json').exists()
  rung_one = [json.loads(p.read_text()) for p in (workdir / 'trials').glob('*/trial.json')]
  assert len(rung_one) == 4  # the first rung was done and stays done
  out = search.run(tiny_search('halving', grid_parallel='stacked'), str(workdir))
  _, straight = halving_stacked
  for key in ('winner', 'rungs', 'trial_epochs', 'test_accuracy'):
    assert out[key] == straight[key], key
  for a, b in zip(out['trials'], straight['trials']):
    assert a['trial'] == b['trial'] and a['epochs_trained'] == b['epochs_trained']
    assert a['val_accuracy'] == pytest.approx(b['val_accuracy']) and a['val_loss'] == pytest.approx(b['val_loss'])


@pytest.mark.slow
def test_seeds_train_in_one_stack_and_the_winner_meets_the_runner_up(tmp_path):
  config = tiny_search('grid', seeds=2, num_epochs=2, retrain_splits=())
  config.grid = ml_collections.ConfigDict({'learning_rate': (1e-2, 3e-3)})
  results = search.run(config, str(tmp_path))
  assert results['seeds'] == 2 and results['model_epochs'] == 2 * results['trial_epochs'] == 8
  for t in results['trials']:
    members = json.loads((tmp_path / 'trials' / t['trial'] / 'trial.json').read_text())['members']
    accuracies = [m['history'][t['best_epoch'] - 1]['val_accuracy'] for m in members]
    assert len(members) == 2 and t['val_accuracy'] == pytest.approx(np.mean(accuracies))
    assert t['val_accuracy_std'] == pytest.approx(np.std(accuracies))
    assert (tmp_path / 'trials' / t['trial'] / 'seed_1' / 'checkpoints').exists()
  comparison = results['comparison']
  assert comparison['runner_up'] != results['winner'] and len(comparison['tests']) == 2
  record = json.loads((tmp_path / 'trials' / results['winner'] / 'trial.json').read_text())
  assert comparison['tests'][0]['examples'] == record['num_val_examples'] > 0
  assert ('cannot tell' in comparison['verdict']) == (comparison['p_value'] >= 0.05)
  assert comparison['verdict'] in (tmp_path / 'report.md').read_text()
  assert results['model_folder'] == f'trials/{results["winner"]}/seed_0'  # tested as trained


@pytest.mark.slow
def test_load_restores_the_step_a_seeded_search_tested(tmp_path):
  """Tested as trained (no retrain), the winner's epoch is chosen on its seeds' mean: load
  restores that step, which results.json names, not seed 0's own best."""
  config = tiny_search('grid', seeds=2, num_epochs=5, retrain_splits=(), seed=1)
  config.grid = ml_collections.ConfigDict({'learning_rate': (1e-2, 3e-3)})
  results = search.run(config, str(tmp_path))
  manager = checkpointing.manager(str(tmp_path / results['model_folder']), config.keep_checkpoints, config.best_by)
  own_best = manager.best_step()
  manager.close()
  assert own_best != results['tested_step']  # the premise: seed 0 alone peaks at another epoch
  model = comicface.load(str(tmp_path))
  assert model.step == results['tested_step'] and model.trial == results['winner']
  assert model.evaluate()['accuracy'] == results['test_accuracy']


@pytest.mark.slow
def test_raising_the_budget_continues_a_random_search(tmp_path):
  config = tiny_search('random', num_trials=2, num_epochs=2)
  config.grid.learning_rate = 'log_uniform(1e-3, 3e-2)'
  first = search.run(config, str(tmp_path))
  stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / 'trials').glob('*/trial.json')}
  more = search.run(override(config, num_trials=3), str(tmp_path))
  assert len(first['trials']) == 2 and len(more['trials']) == 3
  assert [t['trial'] for t in more['trials'][:2]] == [t['trial'] for t in first['trials']]
  assert all(p.stat().st_mtime_ns == m for p, m in stamps.items())  # not retrained
  longer = search.run(override(config, num_trials=3, num_epochs=3), str(tmp_path))
  assert all(t['epochs_trained'] == 3 for t in longer['trials'])
  assert longer['trial_epochs'] == 9


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec('optuna') is None, reason='needs the search extra (optuna)')
def test_a_bayesian_search_of_two_batches_asks_the_same_again(tmp_path, monkeypatch):
  """TPE is asked to optimise config.best_by: here to minimise the validation loss, told each
  earlier trial's best val_loss (not its accuracy). A rerun asks the same trials again."""
  import optuna  # pylint: disable=g-import-not-at-top
  studies, create = [], optuna.create_study

  def keep(*args, **kwargs):  # Optuna's own study, kept to read what it was asked
    studies.append(create(*args, **kwargs))
    return studies[-1]
  monkeypatch.setattr(optuna, 'create_study', keep)
  config = tiny_search('bayesian', num_trials=4, bayesian_batch=2, num_epochs=2, best_by='val_loss')
  config.grid = ml_collections.ConfigDict({'learning_rate': 'log_uniform(1e-3, 3e-2)',
                                           'model': {'dropout_rate': (0.0, 0.5)}})
  results = search.run(config, str(tmp_path))
  assert [t['trial'][:3] for t in results['trials']] == ['000', '001', '002', '003']
  for t in results['trials']:
    assert 1e-3 <= t['learning_rate'] <= 3e-2 and t['model.dropout_rate'] in (0.0, 0.5)
  assert len(studies) == 2 and all(s.direction == optuna.study.StudyDirection.MINIMIZE for s in studies)
  told = studies[1].get_trials(states=(optuna.trial.TrialState.COMPLETE,))  # the first batch, told to the second
  rows = {(t['learning_rate'], t['model.dropout_rate']): t for t in results['trials']}
  assert len(told) == 2
  for t in told:
    row = rows[t.params['learning_rate'], t.params['model.dropout_rate']]
    assert t.value == row['val_loss'] != row['val_accuracy']  # the trial's best val_loss
  assert (tmp_path / 'report.md').exists()
  (tmp_path / 'results.json').unlink()  # rerun: every trial is done, so only the asking happens again
  again = search.run(config, str(tmp_path))
  assert [t['trial'] for t in again['trials']] == [t['trial'] for t in results['trials']]
