"""The studies' own split schemes, computed at load time from one build, and their configs."""
import numpy as np
import pytest

from comicface import input_pipeline, search, search_space, splits, synthetic
from configs import repro_cnn_study, repro_mlp_study
from conftest import build

N = 10_000  # pairs in the real v2 release


def full_size_labels():
  labels = np.repeat([0, 1], N)
  names = sorted(str(i) for i in range(N))  # a file listing: '10' sorts before '2'
  index = np.tile(np.argsort(np.argsort(names)), 2)  # index_in_class of file i's name
  return labels, index


def test_cnn_study_scheme_sizes_and_disjointness():
  labels, index = full_size_labels()
  parts = splits.cnn_study(labels, index)
  assert {k: len(v) for k, v in parts.items()} == {'train': 5760, 'validation': 640, 'test': 1600}
  everything = np.concatenate(list(parts.values()))
  assert len(np.unique(everything)) == 8000  # disjoint
  assert set(index[everything]) == set(range(4000))  # the first 4,000 of each class by name
  assert np.bincount(labels[everything]).tolist() == [4000, 4000]
  again = splits.cnn_study(labels, index)
  assert all(np.array_equal(parts[k], again[k]) for k in parts)  # deterministic


def test_mlp_study_scheme_sizes_and_sorted_name_order():
  labels, index = full_size_labels()
  parts = splits.mlp_study(labels, index)
  assert {k: len(v) for k, v in parts.items()} == {'train': 10000, 'validation': 4000, 'test': 6000}
  assert len(np.unique(np.concatenate(list(parts.values())))) == 2 * N
  names = sorted(str(i) for i in range(N))
  train_names = {names[i] for i in index[parts['train']]}
  assert train_names == set(names[:5000]) and '10' in train_names and '9999' not in train_names
  assert {names[i] for i in index[parts['test']]} == set(names[7000:])


def test_schemes_read_from_one_build(tmp_path):
  source = tmp_path / 'src'
  synthetic.write_dataset(source, 50, size=32, seed=1)  # files 0..49, the real naming
  builder = build(source, tmp_path / 'data', 'rgb24')
  sizes = {}
  for scheme in ('cnn_study', 'mlp_study'):
    splits = {s: input_pipeline.open_split(builder, s, 4, scheme) for s in ('train', 'validation', 'test')}
    sizes[scheme] = {s: v.num_examples for s, v in splits.items()}
    seen = [bytes(v.record(i)['filename']) for v in splits.values() for i in range(v.num_examples)]
    assert len(seen) == len(set(seen))
  assert sizes['cnn_study'] == {'train': 29, 'validation': 3, 'test': 8}   # 40 images: 20 a class
  assert sizes['mlp_study'] == {'train': 50, 'validation': 20, 'test': 30}
  train_files = {input_pipeline.open_split(builder, 'train', 4, 'mlp_study').record(i)['filename'].decode()
                 for i in range(50)}
  assert train_files == {f'{c}/{n}.jpg' for c in ('comic', 'face')
                         for n in sorted(str(i) for i in range(50))[:25]}


@pytest.mark.parametrize('module, scheme', [(repro_cnn_study, 'cnn_study'), (repro_mlp_study, 'mlp_study')])
def test_repro_configs_follow_the_protocols(module, scheme):
  config = module.get_config()
  assert config.dataset.split_scheme == scheme
  trials, epochs = search_space.expand(config), search_space.epochs_to_read(config)
  if scheme == 'cnn_study':
    assert len(trials) == 16 and epochs == list(range(1, 11)) and config.optimizer == 'adam'
    assert config.dataset.name == 'comic_faces/gray128' and tuple(config.retrain_splits) == ('train',)
  else:
    assert len(trials) == 2 and epochs == [1, 3, 5] and config.optimizer == 'sgd'
    assert config.augment == 'flip_lr' and config.batch_size == 64 and config.dataset.name == 'comic_faces/rgb24'
    assert tuple(config.retrain_splits) == ('train', 'validation')


@pytest.mark.slow
@pytest.mark.parametrize('module', [repro_cnn_study, repro_mlp_study])
def test_repro_runlocal_runs_the_protocol(module, tmp_path):
  """`:runlocal` of each study's config: its own splits, its grid, the winner retrained and
  tested on the scheme's test split, well above chance on the stand-in."""
  config = module.get_config('runlocal')
  if module is repro_cnn_study:  # 16 trials: keep one filter pair to stay within seconds
    config.grid.model.filters_1, config.grid.model.filters_2 = (8,), (4,)
  results = search.run(config, str(tmp_path))
  pairs = config.dataset.synthetic_pairs
  labels, index = np.repeat([0, 1], pairs), np.tile(np.argsort(np.argsort([str(i) for i in range(pairs)])), 2)
  test_size = len(splits.COMPUTED[config.dataset.split_scheme](labels, index)['test'])
  assert results['num_test_examples'] == test_size
  trials, epochs = search_space.expand(config), search_space.epochs_to_read(config)
  assert results['winner'] in [t.name for t in trials] and results['best_epoch'] in epochs
  assert len(results['trials']) == len(trials)
  assert results['test_accuracy'] >= 0.75  # chance is 0.5
  assert (tmp_path / 'report.md').exists()
