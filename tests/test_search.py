"""The grid search: expansion, grouping, selection, stacked == sequential, resumption, retraining, reports."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from comicface import errors, search, search_space
from comicface.search import trials
from configs import cnn_grid, mlp_grid
from conftest import ROOT, Compiles, tiny_config


def tiny_grid(**overrides):
  config = tiny_config(**{'num_epochs': 2, **overrides})
  config.grid = ml_collections.ConfigDict({'learning_rate': (1e-2, 3e-3),
                                           'model': {'dropout_rate': (0.0, 0.5)}})
  return config


def test_cnn_grid_expands_to_the_studys_16_trials():
  config = cnn_grid.get_config()
  trials, epochs = search_space.expand(config), search_space.epochs_to_read(config)
  assert len(trials) == 16 and epochs == list(range(1, 11))
  combos = {(t.config.model.filters_1, t.config.model.filters_2, t.config.model.dropout_rate,
             t.config.learning_rate) for t in trials}
  assert combos == {(a, b, c, d) for a in (100, 200) for b in (25, 50) for c in (0.5, 0.7)
                    for d in (1e-2, 1e-3)}
  assert all(not t.config.grid and t.config.num_epochs == 10 for t in trials)
  shapes = search_space.groups(trials, 'stacked')
  assert len(shapes) == 4 and all(len(g) == 4 for g in shapes)  # lr x dropout stack per filter pair
  assert len(search_space.groups(trials, 'sequential')) == 16


def test_epochs_axis_costs_one_run():
  config = mlp_grid.get_config()
  trials, epochs = search_space.expand(config), search_space.epochs_to_read(config)
  assert epochs == [1, 3, 5]
  assert [t.config.learning_rate for t in trials] == [1e-2, 1e-3]
  assert all(t.config.num_epochs == 5 for t in trials)


def test_grid_override_and_unknown_axis():
  config = cnn_grid.get_config()
  config.grid.learning_rate = (0.1,)
  assert len(search_space.expand(config)) == 8
  config.grid.model.no_such_field = (1, 2)
  with pytest.raises(errors.ConfigError, match="'model.no_such_field', which is not a config field"):
    search_space.expand(config)


def _record(epoch, acc, loss):
  return {'epoch': epoch, 'val_accuracy': acc, 'val_loss': loss}


def test_selection_breaks_ties_by_loss_then_fewer_epochs():
  histories = {
      'a': [_record(1, 0.9, 0.3), _record(2, 0.95, 0.2), _record(3, 0.95, 0.2)],
      'b': [_record(1, 0.95, 0.25), _record(2, 0.95, 0.1), _record(3, 0.5, 0.1)],
      'c': [_record(1, math.nan, math.nan), _record(2, 0.95, 0.1)],
  }
  assert trials.select(histories, [1, 2, 3], 'val_accuracy') == ('b', _record(2, 0.95, 0.1))  # b/2 ties c/2: order kept
  assert trials.select({'a': histories['a']}, [1, 2, 3], 'val_accuracy')[1]['epoch'] == 2    # same acc and loss: fewer epochs
  assert trials.select(histories, [1, 3], 'val_accuracy') == ('a', _record(3, 0.95, 0.2))      # epochs off the axis ignored
  assert trials.select({'c': histories['c']}, [1], 'val_accuracy')[1]['epoch'] == 1           # only NaN: still a result


@pytest.fixture(scope='module')
def sequential(tmp_path_factory):
  """The tiny grid run trial after trial, uninterrupted: (workdir, results, XLA compilations
  counted by function name during the run)."""
  workdir = tmp_path_factory.mktemp('sequential')
  with Compiles() as compiles:
    results = search.run(tiny_grid(grid_parallel='sequential'), str(workdir))
  return workdir, results, compiles.counts


@pytest.mark.slow
def test_sequential_trials_of_one_shape_compile_their_steps_once(sequential):
  """4 trials (learning and dropout rates) and the retrain (on another split) share one
  static config and the resident build: their train, eval and init steps compile once each."""
  counts = sequential[2]
  assert counts['jit(train_resident)'] == counts['jit(eval_resident)'] == counts['jit(init_state)'] == 1, counts


@pytest.mark.slow
def test_stacked_equals_sequential(tmp_path, sequential):
  results = {'sequential': {t['trial']: t for t in sequential[1]['trials']}}
  out = search.run(tiny_grid(grid_parallel='stacked'), str(tmp_path / 'stacked'))
  assert out['grid_parallel'] == 'stacked' and sequential[1]['grid_parallel'] == 'sequential'
  results['stacked'] = {t['trial']: t for t in out['trials']}
  assert results['stacked'].keys() == results['sequential'].keys() and len(results['stacked']) == 4
  for name, s in results['stacked'].items():
    q = results['sequential'][name]
    assert s['best_epoch'] == q['best_epoch']
    assert s['val_accuracy'] == pytest.approx(q['val_accuracy'], abs=1e-6)
    assert s['val_loss'] == pytest.approx(q['val_loss'], rel=1e-4)
  stacked_dir = tmp_path / 'stacked'
  for f in ('report.md', 'curves.png', 'grid.png', 'confusion.png', 'misclassified.png'):
    assert (stacked_dir / f).stat().st_size > 0, f
  report = (stacked_dir / 'report.md').read_text()
  assert 'Test accuracy' in report and '95% CI' in report and 'errors out of' in report
  for name in results['stacked']:
    assert list((stacked_dir / 'trials' / name / 'tensorboard').glob('events.out.tfevents.*'))


@pytest.mark.slow
def test_retrain_on_train_and_validation(tmp_path):
  config = tiny_grid(retrain_splits=('train', 'validation'))
  config.grid = ml_collections.ConfigDict({'learning_rate': (1e-2,), 'num_epochs': (1, 2)})
  out = search.run(config, str(tmp_path))
  final = json.loads((tmp_path / 'final' / 'results.json').read_text())
  assert final['config']['train_splits'] == ['train', 'validation']
  assert final['config']['num_epochs'] == out['best_epoch'] and final['config']['test_checkpoint'] == 'last'
  assert out['test_accuracy'] == final['test_accuracy']
  assert out['chosen'] == {'learning_rate': 1e-2}


@pytest.mark.slow
def test_interrupted_grid_skips_finished_trials_and_resumes(tmp_path, caplog, sequential):
  """kill -9 during the second trial; the rerun does not redo the first, resumes the second,
  and ends with the winner and test accuracy of the uninterrupted grid."""
  workdir = tmp_path / 'w'
  script = ('import sys\n'
            'from conftest import tiny_config\n'
            'from test_search import tiny_grid\n'
            'from comicface import search\n'
            'search.run(tiny_grid(grid_parallel="sequential"), sys.argv[1])\n')
  env = {**os.environ, 'PYTHONPATH': f'{ROOT}{os.pathsep}{ROOT / "tests"}'}
  proc = subprocess.Popen([sys.executable, '-c', script, str(workdir)], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  trials = search_space.expand(tiny_grid())
  first, second = (workdir / 'trials' / t.name for t in trials[:2])
  deadline = time.time() + 240
  while time.time() < deadline and not any(
      p.name.isdigit() for p in (second / 'checkpoints').glob('*')):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert (first / 'trial.json').exists() and not (second / 'trial.json').exists()
  before = (first / 'trial.json').stat().st_mtime_ns
  caplog.set_level('INFO')
  out = search.run(tiny_grid(grid_parallel='sequential'), str(workdir))
  assert (first / 'trial.json').stat().st_mtime_ns == before  # not rerun
  assert len(out['trials']) == 4
  history = json.loads((second / 'trial.json').read_text())['history']
  assert [h['epoch'] for h in history] == [1, 2]
  straight = sequential[1]
  assert out['winner'] == straight['winner'] and out['test_accuracy'] == straight['test_accuracy']
  assert out['trials'] == straight['trials']
  assert f'{second}: resumed from step' in caplog.text


@pytest.mark.slow
def test_grid_is_overridden_from_the_command_line():
  """main.py's own flags: `--config.grid.X=(...)` replaces an axis."""
  script = ('import json, sys\n'
            'import main\n'
            'from comicface import search_space\n'
            'main.parse_flags(sys.argv)\n'
            'trials = search_space.expand(main.FLAGS.config)\n'
            'print(json.dumps([[t.config.model.filters_1, t.config.learning_rate] for t in trials]))\n')
  r = subprocess.run([sys.executable, '-c', script, '--config=configs/cnn_grid.py', '--workdir=unused',
                      '--config.grid.learning_rate=(0.1,0.01,0.001)', '--config.grid.model.filters_1=(64,)'],
                     capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  trials = json.loads(r.stdout.strip().splitlines()[-1])
  assert len(trials) == 3 * 1 * 2 * 2
  assert {f for f, _ in trials} == {64} and {lr for _, lr in trials} == {0.1, 0.01, 0.001}
