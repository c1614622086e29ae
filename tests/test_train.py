"""The whole training loop for real, on generated data: train, resume, evaluate, predict."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from comicface import imaging, inference, logs, synthetic, train
from comicface import workdir as workdirs
from conftest import REAL_SAMPLE, ROOT, TINY_PAIRS, tiny_config
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """One tiny CNN run of 5 epochs; returns (config, workdir, results)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  config = tiny_config(num_epochs=5)
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_training_learns_and_writes_results(trained):
  _, workdir, results = trained
  assert results['test_accuracy'] >= 0.9
  test_pairs = sum(comic_faces.split_of(str(i)) == 'test' for i in range(TINY_PAIRS))
  assert results['num_test_examples'] == 2 * test_pairs  # every test image once
  for key in ('test_loss', 'best_epoch', 'best_val_accuracy', 'config'):
    assert key in results
  history = results['history']
  assert [h['epoch'] for h in history] == [1, 2, 3, 4, 5]
  assert history[-1]['train_loss'] < history[0]['train_loss']
  on_disk = json.loads((pathlib.Path(workdir) / 'results.json').read_text())
  assert on_disk['test_accuracy'] == results['test_accuracy']
  assert on_disk['config']['model']['filters_1'] == 8
  assert list((pathlib.Path(workdir) / 'tensorboard').glob('events.out.tfevents.*'))
  for f in ('report.md', 'curves.png', 'confusion.png', 'misclassified.png'):
    assert (pathlib.Path(workdir) / f).stat().st_size > 0, f
  errors = round((1 - results['test_accuracy']) * results['num_test_examples'])
  assert f'{errors} errors out of {results["num_test_examples"]} test images' in (
      pathlib.Path(workdir) / 'report.md').read_text()


def test_checkpoints_keep_latest_and_best(trained):
  _, workdir, results = trained
  steps = sorted(int(p.name) for p in (pathlib.Path(workdir) / 'checkpoints').iterdir() if p.name.isdigit())
  steps_per_epoch = results["history"][0]["step"]
  assert steps_per_epoch * 5 in steps and results['best_step'] in steps  # latest and best both kept
  assert len(steps) <= 3


def test_rerun_on_finished_workdir_only_reports(trained):
  config, workdir, results = trained
  before = sorted(p.name for p in (pathlib.Path(workdir) / 'checkpoints').iterdir())
  assert train.train_and_evaluate(config, workdir) == json.loads(json.dumps(results))
  assert sorted(p.name for p in (pathlib.Path(workdir) / 'checkpoints').iterdir()) == before


def test_evaluate_reproduces_test_accuracy(trained):
  config, workdir, results = trained
  evaluation = inference.load(workdir, config).evaluate()
  assert evaluation['accuracy'] == results['test_accuracy']
  assert evaluation['loss'] == pytest.approx(results['test_loss'], rel=1e-6)
  assert evaluation['num_examples'] == results['num_test_examples']
  saved = json.loads((pathlib.Path(workdir) / 'evaluations' / 'own-test.json').read_text())
  assert saved['step'] == results['tested_step'] and saved['accuracy'] == results['test_accuracy']
  assert sum(map(sum, saved['confusion'])) == results['num_test_examples']
  assert saved['errors'] == round((1 - results['test_accuracy']) * results['num_test_examples'])


def test_evaluate_other_step_and_split(trained):
  config, workdir, results = trained
  first = results['history'][0]['step']
  if first not in [int(p.name) for p in (pathlib.Path(workdir) / 'checkpoints').iterdir() if p.name.isdigit()]:
    first = results['history'][-1]['step']
  out = inference.load(workdir, step=first).evaluate(split='validation')
  record = next(h for h in results['history'] if h['step'] == first)
  assert out['accuracy'] == pytest.approx(record['val_accuracy'])
  suffix = '' if first == results['tested_step'] else f'-step{first}'  # the tested checkpoint is the default
  assert (pathlib.Path(workdir) / 'evaluations' / f'own-validation{suffix}.json').exists()
  with pytest.raises(inference.NoCheckpointError, match='no checkpoint at step 12345'):
    inference.load(workdir, step=12345)


def test_predict_labels_images_and_reports_unreadable(trained, tmp_path):
  _, workdir, _ = trained
  for i in range(4):
    face, comic = synthetic.render_pair(seed=99, index=i, size=128)  # unseen, at the stand-in's size
    (tmp_path / f'face{i}.jpg').write_bytes(face)
    (tmp_path / f'comic{i}.jpg').write_bytes(comic)
  (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg')
  model = inference.load(workdir)
  paths = inference.expand_patterns([str(tmp_path / '*.jpg'), str(tmp_path / 'missing.png')])
  out = {path: (probs, why) for path, probs, why in model.predict_files(paths)}
  assert len(out) == 10 and sum(probs is None for probs, _ in out.values()) == 2
  assert out[str(tmp_path / 'broken.jpg')][1] and out[str(tmp_path / 'missing.png')][1]
  face = model.classes.index('face')
  right = sum((out[str(tmp_path / f'{kind}{i}.jpg')][0][face] >= 0.5) == (kind == 'face')
              for kind in ('face', 'comic') for i in range(4))
  assert right >= 7
  with pytest.raises(imaging.ImageError, match='broken.jpg: cannot decode'):
    model.predict([str(tmp_path / 'face0.jpg'), str(tmp_path / 'broken.jpg')])


def test_evaluate_without_checkpoint_fails(tmp_path):
  with pytest.raises(workdirs.NoRunError, match='holds no run'):
    inference.load(str(tmp_path))


@pytest.mark.slow
def test_resume_after_stop_continues_from_saved_step(tmp_path):
  """A run stopped after epoch 1, rerun for 2 epochs, ends where an unstopped run does."""
  stopped = str(tmp_path / 'stopped')
  first = train.train_and_evaluate(tiny_config(num_epochs=1), stopped)
  (pathlib.Path(stopped) / 'results.json').unlink()  # as if stopped before the end
  resumed = train.train_and_evaluate(tiny_config(num_epochs=2), stopped)
  straight = train.train_and_evaluate(tiny_config(num_epochs=2), str(tmp_path / 'straight'))
  assert resumed['history'][0] == first['history'][0]
  assert resumed['history'][1]['step'] == 2 * first['history'][0]['step']
  for a, b in zip(resumed['history'], straight['history']):
    assert a == pytest.approx(b, rel=1e-5)


def _main(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, str(ROOT / 'main.py'), *args], capture_output=True,
                        text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize('override, message', [
    ('--config.learning_rate=-0.1', 'config.learning_rate=-0.1 is invalid: must be > 0'),
    ('--config.model.dropout_rate=1.0', 'config.model.dropout_rate=1.0 is invalid: must be in [0, 1)'),
    ('--config.num_epochs=0', 'config.num_epochs=0 is invalid: must be >= 1'),
    ('--config.no_such_field=3', 'no_such_field'),
    ('--config.batch_size=abc', 'batch_size'),
])
def test_bad_config_fails_before_any_work(tmp_path, override, message):
  workdir = tmp_path / 'w'
  r = _main('--config=configs/default.py:runlocal', f'--workdir={workdir}', override, timeout=120)
  assert r.returncode != 0 and message in r.stderr
  assert not workdir.exists()


@pytest.mark.parametrize('taken, logged', [(1, [20, 40, 60, 80, 100]), (3, [21, 42, 63, 84]),
                                           (32, [32, 64, 96]), (8, [24, 48, 72, 96]), (50, [50, 100])])
def test_log_steps_fall_on_calls_at_most_once_per_interval(taken, logged):
  """Every 20 steps, 100 in all, taken `taken` at a time: a log step at the first call that
  ends 20 or more steps after the last."""
  log_steps = logs.LogSteps(every=20, start=0)
  ends = list(range(taken, 100, taken)) + [100]
  assert [e for e in ends if log_steps.due(e)] == logged


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason='shared/real_sample is absent')
def test_real_sample_held_out_pairs_beat_chance(tmp_path):
  config = tiny_config(num_epochs=6, learning_rate=1e-3)
  config.dataset.manual_dir = str(REAL_SAMPLE)
  config.dataset.data_dir = str(tmp_path / 'tfds')
  config.model.filters_1, config.model.filters_2 = 32, 16
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert results['num_test_examples'] >= 10
  assert results['test_accuracy'] >= 0.85  # chance is 0.5


@pytest.mark.slow
def test_main_trains_with_overrides_then_evaluates(tmp_path):
  workdir = tmp_path / 'w'
  common = ['--config=configs/default.py:runlocal', f'--workdir={workdir}']
  r = _main(*common, '--config.model.filters_1=6', '--config.num_epochs=1')
  assert r.returncode == 0, r.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['config']['model']['filters_1'] == 6 and results['config']['num_epochs'] == 1
  assert 'GENERATED STAND-IN' in r.stderr
  assert 'img/s ETA' in r.stderr  # the progress line
  r = _main(*common, '--config.model.filters_1=6', '--config.num_epochs=1', '--mode=evaluate')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((workdir / 'evaluations' / 'own-test.json').read_text())['accuracy'] == results['test_accuracy']
  r = _main(*common, '--mode=predict', '--images=x.jpg')  # filters_1 differs: another run
  assert r.returncode != 0 and 'model: workdir has' in r.stderr


def test_seldom_checkpoints_still_test_the_best_epoch(trained, tmp_path):
  """With checkpoints only as the run ends (an interval longer than the run), the best epoch,
  held on the host meanwhile, is written beside the last and tested: the results equal those
  of the run that saved every epoch."""
  config, _, every_epoch = trained
  results = train.train_and_evaluate(tiny_config(num_epochs=5, checkpoint_seconds=1e9), str(tmp_path))
  assert results['history'] == every_epoch['history']
  for key in ('best_step', 'test_accuracy', 'test_loss'):
    assert results[key] == every_epoch[key], key
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert saved == sorted({every_epoch['best_step'], every_epoch['history'][-1]['step']})
  assert every_epoch['best_step'] != every_epoch['history'][-1]['step']  # the premise: the best was held, not last


def test_testing_the_last_epoch_says_which_epoch_was_tested_and_which_was_best(trained, tmp_path):
  """With test_checkpoint='last', results.json and the report name the last epoch as tested
  and the best by best_by as best, as the run that tests the best does."""
  _, _, best_run = trained
  results = train.train_and_evaluate(tiny_config(num_epochs=5, test_checkpoint='last'), str(tmp_path))
  assert results['history'] == best_run['history']  # the same training
  last = results['history'][-1]
  assert best_run['best_step'] != last['step']  # the premise: the best epoch is not the last
  assert (results['tested_step'], results['tested_epoch']) == (last['step'], 5)
  assert (best_run['tested_step'], best_run['tested_epoch']) == (best_run['best_step'], best_run['best_epoch'])
  for key in ('best_epoch', 'best_step', 'best_val_accuracy', 'best_val_loss'):
    assert results[key] == best_run[key], key
  best = next(h for h in results['history'] if h['epoch'] == results['best_epoch'])
  assert best['step'] == results['best_step'] and best['val_accuracy'] == max(h['val_accuracy'] for h in results['history'])
  assert (f'Checkpoint tested: step {last["step"]}, epoch 5. Best epoch by val_accuracy: {best["epoch"]} '
          f'(validation accuracy {best["val_accuracy"]:.4f}') in (tmp_path / 'report.md').read_text()
  assert inference.load(str(tmp_path)).step == last['step']


def test_evaluate_gives_every_metric_of_the_training_runs_test(trained):
  _, workdir, results = trained
  evaluation = inference.load(workdir).evaluate()
  tested = {k[len('test_'):]: v for k, v in results.items() if k.startswith('test_')}
  assert set(tested) >= {'loss', 'accuracy', 'roc_auc', 'class_accuracy_comic', 'class_accuracy_face'}
  assert evaluation['metrics'] == pytest.approx(tested, rel=1e-6)
  assert evaluation['metrics']['accuracy'] == results['test_accuracy']


def test_a_metric_added_in_one_function_reaches_the_results_and_the_report(tmp_path):
  """A metric registered in metrics.py's way (here from the test) is in every record,
  results.json, the report and evaluate's output, and early stopping monitors it in the sense
  it was registered with: the Brier score falling every epoch is improving (lower is better),
  and the run goes on; the same numbers registered as a score (higher is better) are
  worsening, and the run stops after its second epoch."""
  from comicface import metrics  # pylint: disable=g-import-not-at-top

  def brier(labels, log_probs, classes):
    probs = np.exp(log_probs)
    return float(np.mean(np.sum((probs - np.eye(len(classes))[labels]) ** 2, -1)))
  metrics.metric('brier', higher_is_better=False)(brier)
  metrics.metric('brier_as_score', higher_is_better=True)(brier)
  try:
    config = tiny_config(num_epochs=3)
    config.early_stopping.monitor = 'val_brier'  # 'auto' mode: lower is better, as registered
    results = train.train_and_evaluate(config, str(tmp_path / 'lower'))
    falling = [h['val_brier'] for h in results['history']]
    assert len(falling) == 3 and falling == sorted(falling, reverse=True)  # the premise: it improved every epoch
    assert not results['stopped_early']
    assert 0 <= results['test_brier'] <= 2 and all('val_brier' in h for h in results['history'])
    assert 'brier' in (tmp_path / 'lower' / 'report.md').read_text()
    assert inference.load(str(tmp_path / 'lower')).evaluate()['metrics']['brier'] == pytest.approx(results['test_brier'])
    config.early_stopping.monitor = 'val_brier_as_score'  # higher is better: the same fall is a worsening
    stopped = train.train_and_evaluate(config, str(tmp_path / 'higher'))
    assert stopped['stopped_early'] and [h['val_brier_as_score'] for h in stopped['history']] == falling[:2]
  finally:
    for name in ('brier', 'brier_as_score'):
      del metrics.METRICS[name]


def test_a_record_name_is_known_only_as_its_metric_writes_it(tmp_path):
  """best_by and early_stopping.monitor take exactly the names the records have: a per-class
  metric with one of the dataset's classes ('val_class_accuracy_face'), the others without a
  suffix. Any other name is refused before anything is written."""
  from comicface import app, configuration, errors, metrics  # pylint: disable=g-import-not-at-top
  assert configuration.classes(tiny_config()) == tuple(comic_faces.CLASS_NAMES) == ('comic', 'face')
  for name in ('val_loss', 'val_roc_auc', 'val_class_accuracy_face', 'val_class_accuracy_comic'):
    configuration.validate(tiny_config(best_by=name, **{'early_stopping.monitor': name}))
  for name in ('val_class_accuracy_dog', 'val_class_accuracy', 'val_accuracy_face', 'val_nothing', 'test_accuracy'):
    with pytest.raises(errors.ConfigError, match=f"config.best_by='{name}' is invalid: .*'val_class_accuracy_face'"):
      configuration.validate(tiny_config(best_by=name))
    with pytest.raises(errors.ConfigError, match=f"config.early_stopping.monitor='{name}' is invalid"):
      configuration.validate(tiny_config(**{'early_stopping.monitor': name}))
  workdir = tmp_path / 'w'
  assert app.run(tiny_config(best_by='val_class_accuracy_dog'), str(workdir)) == 1 and not workdir.exists()
  assert not metrics.maximize('val_loss') and metrics.maximize('val_class_accuracy_face')
