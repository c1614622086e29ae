"""Using what a run leaves: evaluate and predict on any workdir, on any data, from Python."""
import hashlib
import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from comicface import imaging, inference, synthetic
from conftest import REAL_SAMPLE, read_predictions
from test_reliability import TINY, run_main

pytestmark = pytest.mark.slow  # each test starts main.py or trains for seconds

GRID = ['--config=configs/cnn_grid.py:runlocal', *TINY[1:], '--config.num_epochs=2',
        '--config.grid.model.filters_1=(8,)', '--config.grid.model.filters_2=(4,)',
        '--config.grid.model.dropout_rate=(0.5,)']


def digests(folder: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def grid_workdir(tmp_path_factory):
  """A shrunk CNN grid (2 trials: the learning rates) trained by its own command."""
  workdir = tmp_path_factory.mktemp('grid')
  r = run_main(workdir, base=GRID)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, json.loads((workdir / 'results.json').read_text())


@pytest.mark.parametrize('with_config', [True, False], ids=['grid_config', 'no_config'])
def test_grid_workdir_evaluates_its_retrained_winner(grid_workdir, with_config):
  workdir, results = grid_workdir
  r = run_main(workdir, '--mode=evaluate', base=GRID if with_config else [])
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'trial {results["winner"]}' in r.stderr  # says which trial it restored
  saved = json.loads((workdir / 'evaluations' / 'own-test.json').read_text())
  assert saved['accuracy'] == results['test_accuracy'] and saved['trial'] == results['winner']
  assert saved['loss'] == pytest.approx(results['test_loss'], rel=1e-6)
  assert saved['num_examples'] == results['num_test_examples']


def test_grid_workdir_predicts_as_the_api_does(grid_workdir, tmp_path):
  """`--mode=predict` without --config on a grid workdir, and `comicface.load(...).predict`
  on the same files (and on their pixels as uint8 arrays), agree."""
  workdir, _ = grid_workdir
  paths = []
  for i in range(3):
    for kind, data in zip(('face', 'comic'), synthetic.render_pair(seed=42, index=i, size=150)):
      paths.append(tmp_path / f'{kind}{i}.jpg')
      paths[-1].write_bytes(data)
  r = run_main(workdir, '--mode=predict', f'--images={tmp_path / "*.jpg"}', base=[])
  assert r.returncode == 0, r.stderr[-3000:]
  printed, errors = read_predictions(r.stdout)
  assert len(printed) == 6 and not errors
  import comicface  # pylint: disable=g-import-not-at-top
  model = comicface.load(str(workdir))
  probs = model.predict([str(p) for p in paths])
  pixels = model.predict([np.asarray(Image.open(p).convert('RGB')) for p in paths])
  for p, row, from_pixels in zip(paths, probs, pixels):
    label, shown = printed[str(p)]
    assert label == model.classes[int(row.argmax())]
    np.testing.assert_allclose(row, [prob for _, prob in shown], atol=1e-4)  # printed to 4 decimals
    np.testing.assert_allclose(from_pixels, row, atol=0.02)  # decoded once more from RGB pixels


@pytest.fixture(scope='module')
def other_data(tmp_path_factory):
  """A second generated dataset, another seed and size."""
  root = tmp_path_factory.mktemp('other')
  synthetic.write_dataset(root, 40, size=100, seed=11)
  return root


def test_evaluation_on_other_data_leaves_the_workdir_unchanged(grid_workdir, other_data, tmp_path):
  workdir, _ = grid_workdir
  before = digests(workdir)
  model = inference.load(str(workdir))
  everything = model.evaluate(data=str(other_data), split='all', data_dir=str(tmp_path / 'tfds'))
  test = model.evaluate(data=str(other_data), split='test', data_dir=str(tmp_path / 'tfds'))
  after = digests(workdir)
  assert {k: v for k, v in after.items() if not k.startswith('evaluations/')} == {
      k: v for k, v in before.items() if not k.startswith('evaluations/')}
  names = sorted(k for k in after if k.startswith('evaluations/') and 'other' in k)
  assert len(names) == 2 and names[0].endswith('-all.json') and names[1].endswith('-test.json')
  assert everything['num_examples'] == 80 and test['num_examples'] < 80  # the whole of it, one split
  for r in (everything, test):
    matrix = np.asarray(r['confusion'])
    assert matrix.sum() == r['num_examples'] and r['errors'] == matrix.sum() - np.trace(matrix)
    assert r['accuracy'] == pytest.approx(1 - r['errors'] / r['num_examples'])
    lo, hi = r['accuracy_95ci']
    assert lo <= r['accuracy'] <= hi
  assert (tmp_path / 'tfds' / 'comic_faces' / 'gray128').exists()  # built in its own data dir


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason='shared/real_sample is absent')
def test_evaluation_on_the_real_v1_sample(grid_workdir, tmp_path):
  workdir, _ = grid_workdir
  r = run_main(workdir, '--mode=evaluate', f'--data={REAL_SAMPLE}', '--split=all',
               f'--data_dir={tmp_path}', base=[])
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads(next((workdir / 'evaluations').glob('face2comics_v1.0.0_sample-*-all.json')).read_text())
  assert saved['num_examples'] == 120


def test_predict_api_names_a_bad_image(grid_workdir):
  model = inference.load(str(grid_workdir[0]))
  with pytest.raises(imaging.ImageError, match=r'float64 array of shape \(4, 4\)'):
    model.predict([np.zeros((4, 4))])
