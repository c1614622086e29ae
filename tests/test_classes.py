"""Any number of classes: the metrics, the report and prediction of 3, 12 and 100 classes."""
import json

import jax
import numpy as np
from PIL import Image
import pytest
from scipy import special

from comicface import app, inference, input_pipeline, metrics, report, synthetic, train
from comicface import steps as steps_lib
from conftest import read_predictions, tiny_config


def names_of(k: int) -> tuple[str, ...]:
  return tuple(f'class_{i:02d}' for i in range(k))


def outputs(k: int, n: int, seed: int, distinct: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(labels, float32 log-probabilities) of n examples of k classes, somewhat informative;
  with `distinct`, the examples repeat that many rows, so that scores tie."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k)) + 2 * np.eye(k)[labels]
  if distinct:
    logits = logits[rng.integers(0, distinct, n)]
  return labels, special.log_softmax(logits, axis=-1).astype(np.float32)


def pairwise_auc(score: np.ndarray, positive: np.ndarray) -> float:
  """P(a positive example scores above a negative one), ties counting half, over every pair."""
  p, q = score[positive][:, None], score[~positive][None, :]
  return float(np.mean((p > q) + 0.5 * (p == q)))


def macro_auc(labels: np.ndarray, log_probs: np.ndarray, classes) -> float:
  """The mean over the classes present of `pairwise_auc` of log P(c) - log P(any other class)."""
  probs = np.exp(log_probs.astype(np.float64))
  score = lambda c: np.log(probs[:, c]) - np.log(np.delete(probs, c, axis=1).sum(1))
  return float(np.mean([pairwise_auc(score(c), labels == c) for c in classes]))


@pytest.mark.parametrize('k, n, distinct', [(2, 60, 12), (3, 60, 12), (3, 300, 0), (12, 600, 0), (100, 2000, 0)])
def test_metrics_against_their_definitions(k, n, distinct):
  labels, log_probs = outputs(k, n, seed=k, distinct=distinct)
  got = metrics.compute(labels, log_probs, names_of(k), 'val')
  assert list(got) == metrics.names('val', names_of(k))
  predicted = [int(np.argmax(row)) for row in log_probs]
  assert got['val_accuracy'] == np.mean([p == y for p, y in zip(predicted, labels)])
  for c, name in enumerate(names_of(k)):
    mine = [p == y for p, y in zip(predicted, labels) if y == c]
    if mine:
      assert got[f'val_class_accuracy_{name}'] == pytest.approx(np.mean(mine))
    else:
      assert np.isnan(got[f'val_class_accuracy_{name}'])
  if k > 5:  # top-5: fewer than 5 classes score above the true one (random scores: no ties)
    above = [(row > row[y]).sum() for row, y in zip(log_probs, labels)]
    assert got['val_top5_accuracy'] == np.mean([a < 5 for a in above])
    assert got['val_accuracy'] < got['val_top5_accuracy'] < 1  # the premise: top-5 differs from both
  else:
    assert 'val_top5_accuracy' not in got
  present = [c for c in range(k) if 0 < (labels == c).sum() < n]
  assert len(present) >= 2 and (k < 100 or len(present) == k)
  assert got['val_roc_auc'] == pytest.approx(macro_auc(labels, log_probs, present), abs=1e-12)
  if distinct:  # the premise: ties, which count half
    assert len(np.unique(log_probs[:, 1])) < n
  if k == 2:  # the two-class AUC: class 1's against class 0's
    log_odds = log_probs[:, 1].astype(np.float64) - log_probs[:, 0]
    assert got['val_roc_auc'] == pytest.approx(pairwise_auc(log_odds, labels == 1), abs=1e-12)


def test_macro_auc_averages_the_classes_present():
  """A class absent from the labels has no AUC; the others' mean is the macro AUC."""
  labels, log_probs = outputs(4, 200, seed=7)
  labels[labels == 3] = 0
  got = metrics.roc_auc(labels, log_probs, names_of(4))
  assert got == pytest.approx(macro_auc(labels, log_probs, range(3)), abs=1e-12)
  assert np.isnan(metrics.roc_auc(np.zeros(200, int), log_probs, names_of(4)))


def test_macro_auc_keeps_apart_probabilities_that_round_to_one():
  """Confident examples whose P(class) is 1 in float64 still rank by the other classes'."""
  log_probs = special.log_softmax(np.array([[40., 0, 0], [39., 0, 0], [0, 40., 0], [0, 0, 40.]]), -1)
  labels = np.array([0, 1, 1, 2])
  assert (np.exp(log_probs[:2, 0]) == 1).all()  # the premise: by P(class 0), examples 0 and 1 tie
  assert pairwise_auc(np.exp(log_probs[:, 0]), labels == 0) == 5 / 6
  assert metrics.roc_auc(labels, log_probs, names_of(3)) == 1.0


def test_names_for_2_and_12_classes():
  assert metrics.names('val', ('comic', 'face')) == [
      'val_loss', 'val_accuracy', 'val_class_accuracy_comic', 'val_class_accuracy_face', 'val_roc_auc']
  twelve = metrics.names('test', names_of(12))
  assert twelve == ['test_loss', 'test_accuracy', 'test_top5_accuracy',
                    *[f'test_class_accuracy_{c}' for c in names_of(12)], 'test_roc_auc']
  assert metrics.maximize('val_top5_accuracy') and metrics.keyed('val_class_accuracy_class_11')
  assert not metrics.keyed('val_top5_accuracy')


class Records(list):
  """A build's records in memory, read as input_pipeline.Split reads its source."""

  def __getitems__(self, rows):
    return [self[i] for i in rows]


@pytest.mark.parametrize('k', [3, 12, 100])
def test_report_of_many_classes(k, tmp_path):
  """The report of k classes: the confusion figure grows beyond 40 classes, holds the counts up to
  20 (report.md: the matrix) and beyond them a colour scale (report.md: the largest confusions);
  no ROC curve beyond two classes."""
  n = 10 * k
  labels, log_probs = outputs(k, n, seed=k)
  rng = np.random.default_rng(0)
  source = Records({'image': rng.integers(0, 256, (24, 24, 3), np.uint8), 'label': y,
                    'filename': f'{names_of(k)[y]}/{i}.jpg'.encode()} for i, y in enumerate(labels))
  split = input_pipeline.Split(source, 8, np.arange(n))
  tested = metrics.compute(labels, log_probs, names_of(k), 'test')
  record = {'epoch': 1, 'step': 10, 'train_loss': 1.0, 'train_accuracy': 0.5,
            **metrics.compute(labels, log_probs, names_of(k), 'val')}
  results = {**tested, 'history': [record, {**record, 'epoch': 2}], 'tested_step': 10, 'tested_epoch': 1,
             'config': {'best_by': 'val_accuracy'}, 'best_epoch': 1, 'best_val_accuracy': 0.5, 'best_val_loss': 1.0}
  report.write(str(tmp_path), results, split, metrics.probabilities(log_probs), names_of(k))
  text = (tmp_path / 'report.md').read_text()
  for png in ('confusion.png', 'misclassified.png', 'curves.png'):
    assert (tmp_path / png).stat().st_size > 0
  assert not (tmp_path / 'roc.png').exists() and 'one-vs-rest macro average' in text
  assert f'| roc_auc | {tested["test_roc_auc"]:.4f} |' in text
  assert ('| top5_accuracy |' in text) == (k > 5)
  assert Image.open(tmp_path / 'confusion.png').size == {3: (420, 380), 12: (960, 920), 100: (2040, 2000)}[k]
  if k <= 20:
    assert '## Test confusion (rows: true, columns: predicted)' in text
    assert text.count('\n| class_') >= k
  else:
    m = report.confusion(labels, log_probs.argmax(-1), k)
    assert 'the 20 most frequent confusions of 100 classes' in text
    assert f'| {names_of(k)[np.argmax(m - np.diag(np.diag(m))) // k]} |' in text
    assert 'val_class_accuracy' not in text.split('## Curves')[1].split('![curves]')[0]


def model_of(k: int, workdir, classes: tuple[str, ...] = ()) -> inference.Model:
  """An untrained CNN of k classes (`classes`, default `names_of(k)`), as inference.load restores
  one: Steps of its task, fresh parameters."""
  config = tiny_config()
  task = input_pipeline.Task(classes or names_of(k), (24, 24, 3))
  steps = steps_lib.Steps(steps_lib.static_config(config), k, task.image_shape, steps_lib.make_mesh())
  return inference.Model(str(workdir), str(workdir), config, task, steps, steps.init(jax.random.PRNGKey(k)), 1, True)


@pytest.fixture(scope='module')
def run_12(tmp_path_factory):
  """A tiny CNN trained 2 epochs on a generated folder of 12 classes; returns (workdir, results)."""
  root = tmp_path_factory.mktemp('run_12')
  source = synthetic.write_folder(root / 'source', classes=12, per_class=10, size=30, seed=1)
  config = tiny_config(num_epochs=2, **{'dataset.name': 'folder', 'dataset.manual_dir': str(source),
                                        'dataset.data_dir': str(root / 'data'), 'dataset.image_size': 24,
                                        'dataset.split_scheme': 'own'})
  return root / 'run', train.train_and_evaluate(config, str(root / 'run'))


@pytest.mark.slow  # a trained run of 12 classes
def test_a_run_of_12_classes_reports_them(run_12):
  workdir, results = run_12
  classes = tuple(json.loads((workdir / 'task.json').read_text())['classes'])
  assert len(classes) == 12 and {'test_top5_accuracy', 'test_roc_auc'} <= set(metrics.names('test', classes)) <= set(results)
  text = (workdir / 'report.md').read_text()
  assert 'one-vs-rest macro average' in text and not (workdir / 'roc.png').exists()
  assert Image.open(workdir / 'confusion.png').size == (960, 920)


@pytest.mark.slow  # a trained run of 12 classes
@pytest.mark.parametrize('k, shown', [(3, 3), (12, 5)])
def test_predict_prints_the_top_classes(k, shown, run_12, tmp_path, capsys):
  """`--mode=predict`'s lines: every class's probability, in class order, up to 5 classes;
  the 5 most probable, most probable first, beyond (12: the trained run, through app.run;
  3: names that hold a space and an '=', read back by splitting at tabs)."""
  rng = np.random.default_rng(k)
  paths = []
  for i in range(3):
    paths.append(str(tmp_path / f'{i}.png'))
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), np.uint8)).save(paths[-1])
  missing = str(tmp_path / 'missing.png')
  if k == 12:
    model = inference.load(str(run_12[0]))
    assert app.run(None, str(run_12[0]), 'predict', images=[str(tmp_path / '*.png'), missing]) == 1
  else:
    model = model_of(k, tmp_path, ('pink primrose', 'a=b', 'sweet pea'))  # a space, an '='
    assert app.print_predictions(model, [*paths, missing]) == 1
  printed, errors = read_predictions(capsys.readouterr().out)
  assert list(printed) == paths and list(errors) == [missing]
  probs = model.predict(paths)
  for path, row in zip(paths, probs):
    label, pairs = printed[path]
    assert label == model.classes[row.argmax()] and len(pairs) == shown
    order = np.argsort(-row)[:shown] if k > 5 else range(k)
    assert k <= 5 or list(order) != list(range(shown))  # the premise: the most probable are not the first
    assert [c for c, _ in pairs] == [model.classes[i] for i in order]
    np.testing.assert_allclose([p for _, p in pairs], row[list(order)], atol=1e-4)


@pytest.mark.slow  # a trained run of 12 classes
def test_evaluate_another_folder_of_the_same_classes(run_12, tmp_path, capsys):
  workdir, _ = run_12
  other = synthetic.write_folder(tmp_path / 'other', classes=12, per_class=4, size=30, seed=5)
  assert app.run(None, str(workdir), 'evaluate', split='all', data=str(other), data_dir=str(tmp_path / 'data')) == 0
  saved, = (workdir / 'evaluations').glob('other-*-all.json')
  evaluation = json.loads(saved.read_text())
  assert evaluation['num_examples'] == 48 and len(evaluation['classes']) == 12
  assert np.asarray(evaluation['confusion']).shape == (12, 12) and 'top5_accuracy' in evaluation['metrics']
  three = synthetic.write_folder(tmp_path / 'three', classes=3, per_class=4, size=30, seed=5)
  assert app.run(None, str(workdir), 'evaluate', data=str(three), data_dir=str(tmp_path / 'data3')) == 1
  error = capsys.readouterr().err
  assert 'ClassesError: ' in error and "['class0', 'class1', 'class2']" in error
  assert not (tmp_path / 'data3').exists()  # refused before building


@pytest.mark.slow  # a trained run of 12 classes
def test_export_names_the_classes(run_12):
  workdir, _ = run_12
  assert app.run(None, str(workdir), 'export') == 0
  meta = json.loads((workdir / 'export' / 'model.json').read_text())
  classes = json.loads((workdir / 'task.json').read_text())['classes']
  assert meta['classes'] == meta['output']['columns'] == classes and len(classes) == 12
  assert meta['output']['shape'] == ['batch', 12]
