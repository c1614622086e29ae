"""A model the studies did not have, added as one file and one config: the ResNet, whose
batch statistics are model state beyond parameters, trains, resumes exactly, stacks in a
grid, evaluates and predicts."""

import jax
import ml_collections
import numpy as np
import pytest

from comicface import inference, search, synthetic, train
from configs import resnet
from conftest import TINY_PAIRS, override
from test_reliability import assert_same_params, final_params

pytestmark = pytest.mark.slow  # each test starts main.py or trains for seconds


def tiny_resnet(**overrides):
  config = resnet.get_config('runlocal')
  return override(config, **{'dataset.synthetic_pairs': TINY_PAIRS, 'batch_size': 8, 'learning_rate': 3e-3,
                             'log_every_steps': 100, **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('resnet')
  return workdir, train.train_and_evaluate(tiny_resnet(num_epochs=3), str(workdir))


def test_the_resnet_trains_with_its_batch_statistics_in_the_checkpoints(trained):
  workdir, results = trained
  assert results['test_accuracy'] >= 0.75 and [h['epoch'] for h in results['history']] == [1, 2, 3]
  _, state = final_params(workdir)
  stats = state['model_state']['batch_stats']
  assert stats and all(np.isfinite(x).all() for x in jax.tree.leaves(stats))
  means = [x for path, x in jax.tree_util.tree_flatten_with_path(stats)[0] if 'mean' in jax.tree_util.keystr(path)]
  assert means and any(np.abs(m).max() > 0 for m in means)  # the running means moved from their zeros


def test_the_resnet_resumes_exactly(tmp_path):
  """2 epochs, then extended to 3 (a resume from the checkpoint): bitwise the straight run,
  batch statistics included. (A constant learning rate: a decaying schedule spans the epochs
  asked for, so an extended run follows another schedule than a straight one.)"""
  constant = {'schedule': 'constant', 'warmup_epochs': 0.0}
  straight = train.train_and_evaluate(tiny_resnet(num_epochs=3, **constant), str(tmp_path / 'straight'))
  assert train.train_and_evaluate(tiny_resnet(num_epochs=2, **constant), str(tmp_path / 'w'))
  extended = train.train_and_evaluate(tiny_resnet(num_epochs=3, **constant), str(tmp_path / 'w'))
  assert_same_params(tmp_path / 'w', tmp_path / 'straight')
  assert extended['history'] == straight['history']


def test_the_resnet_evaluates_and_predicts(trained, tmp_path):
  workdir, results = trained
  model = inference.load(str(workdir))
  assert model.evaluate()['accuracy'] == results['test_accuracy']
  pairs = [synthetic.render_pair(seed=7, index=i, size=128) for i in range(3)]
  probs = model.predict([image for pair in pairs for image in pair])
  assert probs.shape == (6, 2) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_the_resnet_stacks_in_a_grid(tmp_path):
  """Two learning rates as one stack give each trial's sequential results (1 epoch)."""
  out = {}
  for mode in ('stacked', 'sequential'):
    config = tiny_resnet(num_epochs=1, grid_parallel=mode)
    config.grid = ml_collections.ConfigDict({'learning_rate': (3e-3, 1e-2)})
    out[mode] = {t['trial']: t for t in search.run(config, str(tmp_path / mode))['trials']}
  assert len(out['stacked']) == 2 and out['stacked'].keys() == out['sequential'].keys()
  for name, s in out['stacked'].items():
    q = out['sequential'][name]
    assert s['best_epoch'] == q['best_epoch'] and s['val_accuracy'] == pytest.approx(q['val_accuracy'], abs=1e-6)
    assert s['val_loss'] == pytest.approx(q['val_loss'], rel=1e-4)
