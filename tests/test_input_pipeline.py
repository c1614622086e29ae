"""Dataset preparation (stand-in, source checks) and the batches the loop sees."""
import collections

import numpy as np
import pytest

from comicface import input_pipeline
from comicface import workdir as workdirs
from conftest import build, tiny_config


@pytest.fixture(scope='module')
def split(source_40, tmp_path_factory):
  builder = build(source_40, tmp_path_factory.mktemp('data'), 'rgb24')
  return input_pipeline.open_split(builder, 'train', 8)


def test_train_batches_shuffle_per_epoch_and_repeat_exactly(split):
  def labels_of(epoch, start=0):
    return [b['label'][0].tolist() for b in input_pipeline.train_batches(split, 0, epoch, start)]
  epoch0 = labels_of(0)
  assert len(epoch0) == split.num_examples // 8
  assert labels_of(0) == epoch0                 # same seed and epoch: same batches
  assert labels_of(1) != epoch0                 # another epoch: another order
  assert labels_of(0, start=3) == epoch0[3:]    # starting mid-epoch continues exactly


def test_blocks_of_steps_hold_the_same_batches(split):
  blocks = list(input_pipeline.train_batches(split, 0, 0, start_step=1, steps_per_call=3))
  assert [len(b['label']) for b in blocks][:-1] == [3] * (len(blocks) - 1)
  single = list(input_pipeline.train_batches(split, 0, 0, start_step=1))
  np.testing.assert_array_equal(np.concatenate([b['image'] for b in blocks]),
                                np.concatenate([b['image'] for b in single]))


def test_train_epoch_visits_distinct_examples(split):
  seen = collections.Counter()
  for b in input_pipeline.train_batches(split, seed=5, epoch=0):
    assert b['image'].shape == (1, 8, 24, 24, 3) and b['image'].dtype == np.uint8
    seen.update(map(bytes, b['image'].reshape(8, -1)))
  assert max(seen.values()) == 1 and sum(seen.values()) == split.num_examples // 8 * 8


def test_eval_batches_hold_every_example_once_in_order(split):
  batches = list(input_pipeline.eval_batches(split))
  assert len(batches) == -(-split.num_examples // 8)
  assert all(b['image'].shape[0] == 8 for b in batches)  # padded to the full batch...
  images = np.concatenate([b['image'] for b in batches])
  np.testing.assert_array_equal(images[:split.num_examples], split.arrays()['image'])
  assert (images[split.num_examples:] == images[split.num_examples - 1]).all()  # ...with the last example


def test_stand_in_is_generated_once_and_reused(tmp_path):
  config = tiny_config()
  first = input_pipeline.prepare(config, str(tmp_path))
  assert 'standin_64x128_seed0' in first.data_dir
  again = input_pipeline.prepare(config, str(tmp_path))
  assert again.info.metadata['fingerprint'] == first.info.metadata['fingerprint']


def test_build_from_another_source_is_never_reused(source_40, tmp_path):
  config = tiny_config()
  config.dataset.name = 'comic_faces/rgb24'
  config.dataset.data_dir = str(tmp_path / 'shared_data_dir')
  input_pipeline.prepare(config, str(tmp_path / 'w1'))  # builds the stand-in there
  config.dataset.manual_dir = str(source_40)
  with pytest.raises(input_pipeline.SourceMismatchError, match='files differ'):
    input_pipeline.prepare(config, str(tmp_path / 'w2'))


def test_workdir_of_another_config_is_refused(tmp_path):
  workdirs.claim(tiny_config(), str(tmp_path))
  workdirs.claim(tiny_config(num_epochs=9), str(tmp_path))  # more epochs: same run
  with pytest.raises(workdirs.WorkdirConflictError, match=r"model: workdir has .*'filters_1': 8"):
    workdirs.claim(tiny_config(**{'model.filters_1': 16}), str(tmp_path))


def test_unknown_dataset_name_is_named():
  with pytest.raises(ValueError, match='comic_faces/gray128'):
    input_pipeline.builder_config('comic_faces/gray999')
