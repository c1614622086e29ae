"""Datasets by name: folders of class folders (generated, and the real sample), a TFDS
dataset registered here from local files, and the splits carved from any of them."""
import io
import json
import pathlib
import shutil

from etils import epath
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from comicface import configuration, errors, imaging, input_pipeline, splits, synthetic, train
from bench import generic_data
from conftest import REAL_SAMPLE, override, tiny_config
from configs import folder


def folder_config(source, model='cnn', **fields):
  """configs/folder.py:runlocal on `source` at 24x24, one epoch of batch 8, a tiny CNN, MLP or ResNet."""
  config = folder.get_config('runlocal')
  config.dataset.manual_dir = str(source)
  config.dataset.image_size = 24
  config.num_epochs, config.batch_size, config.learning_rate = 1, 8, 1e-2
  config.log_every_steps, config.checkpoint_seconds = 100, 0.0
  config.model.filters_1, config.model.filters_2 = 8, 4
  if model == 'mlp':
    config.model = {'name': 'mlp', 'hidden': (16,), 'input_scaling': 'unit'}
    config.speed.predict_chunk = config.speed.cpu_slice_images = 0
  if model == 'resnet':
    config.model = {'name': 'resnet', 'widths': (8, 16), 'blocks_per_stage': 1, 'input_scaling': 'unit'}
  return override(config, **fields)


@pytest.fixture(scope='module')
def three(tmp_path_factory) -> pathlib.Path:
  """3 classes of 12 images in DIR/<class>/ (PNG and JPEG, grey and colour, odd sizes) and a corrupt file."""
  return synthetic.write_folder(tmp_path_factory.mktemp('three'), 3, 12, size=40, seed=1, corrupt=True)


@pytest.fixture(scope='module')
def twelve(tmp_path_factory) -> pathlib.Path:
  """12 classes, its own train/ (8 a class, a corrupt file) and test/ (2 a class; the last class's folder missing)."""
  return synthetic.write_folder(tmp_path_factory.mktemp('twelve'), 12, 8, size=36, seed=2, test_per_class=2,
                                corrupt=True, missing=True)


def split_sizes(dataset, scheme='own'):
  return {s: input_pipeline.open_split(dataset, s, 1, scheme).num_examples for s in input_pipeline.SPLITS}


def test_folder_is_built_once_with_bad_files_skipped_and_splits_carved(three, tmp_path):
  config = folder_config(three, **{'dataset.data_dir': str(tmp_path / 'data')})
  assert configuration.classes(config) == ('class0', 'class1', 'class2')  # before any build
  dataset = input_pipeline.prepare(config, str(tmp_path / 'w'))
  task = input_pipeline.Task.of(dataset)
  assert task.classes == ('class0', 'class1', 'class2') and task.image_shape == (24, 24, 3)
  assert list(dataset.info.metadata['bad_files']) == ['class0/corrupt.jpg']  # skipped, counted, listed
  assert dataset.info.splits['train'].num_examples == 36 and list(dataset.info.splits) == ['train']
  assert split_sizes(dataset) == {'train': 28, 'validation': 4, 'test': 4}  # 10% each, carved from train
  parts = [input_pipeline.open_split(dataset, s, 1, 'own') for s in input_pipeline.SPLITS]
  assert sorted(np.concatenate([p.index for p in parts]).tolist()) == list(range(36))  # disjoint, complete
  record = parts[1].record(0)
  assert record['image'].shape == (24, 24, 3) and record['filename'].decode().startswith('class')
  stamp = (pathlib.Path(dataset.data_dir) / 'dataset_info.json').stat().st_mtime_ns
  again = input_pipeline.prepare(config, str(tmp_path / 'w'))
  assert (pathlib.Path(again.data_dir) / 'dataset_info.json').stat().st_mtime_ns == stamp  # not rebuilt


def test_two_folders_never_share_a_build(three, tmp_path):
  copy = shutil.copytree(three, tmp_path / 'copy')
  a, b = (input_pipeline.prepare(folder_config(s, **{'dataset.data_dir': str(tmp_path / 'data')}), str(tmp_path / w))
          for s, w in ((three, 'a'), (copy, 'b')))
  assert a.data_dir != b.data_dir


def test_a_zip_of_the_folder_gives_the_same_images(three, tmp_path):
  archive = shutil.make_archive(str(tmp_path / 'three'), 'zip', three.parent, three.name)  # three/<class>/...
  built = [input_pipeline.open_split(input_pipeline.prepare(folder_config(s, **{'dataset.data_dir': str(tmp_path)}),
                                                            str(tmp_path / w)), 'train', 1, 'own').arrays()
           for s, w in ((three, 'a'), (archive, 'b'))]
  for key in ('image', 'label'):
    np.testing.assert_array_equal(built[0][key], built[1][key])


def test_build_pointed_at_other_files_is_refused(three, tmp_path):
  source = shutil.copytree(three, tmp_path / 'src')
  config = folder_config(source, **{'dataset.data_dir': str(tmp_path / 'data')})
  input_pipeline.prepare(config, str(tmp_path / 'w1'))
  (source / 'class1' / 'img0000.jpg').unlink()  # the same folder now holds other files
  with pytest.raises(input_pipeline.SourceMismatchError, match='files differ'):
    input_pipeline.prepare(config, str(tmp_path / 'w2'))


def test_carve_is_stratified_and_seeded():
  labels = np.repeat([0, 1, 2], [50, 30, 20])
  parts = splits.carve(labels, {'test': 0.1, 'validation': 0.2}, seed=3)
  assert {k: np.bincount(labels[v], minlength=3).tolist() for k, v in parts.items()} == {
      'test': [5, 3, 2], 'validation': [10, 6, 4], 'train': [35, 21, 14]}
  assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
  same = splits.carve(labels, {'test': 0.1, 'validation': 0.2}, seed=3)
  other = splits.carve(labels, {'test': 0.1, 'validation': 0.2}, seed=4)
  assert all(np.array_equal(parts[k], same[k]) for k in parts)
  assert not np.array_equal(parts['validation'], other['validation'])
  with pytest.raises(errors.ConfigError, match='validation_fraction'):
    splits.carve(labels[:2], {'test': 0.1, 'validation': 0.1}, seed=0)


def test_carved_splits_are_recorded_and_read_back_from_the_workdir(three, tmp_path):
  config = folder_config(three, **{'dataset.data_dir': str(tmp_path / 'data')})
  workdir = tmp_path / 'w'
  first = input_pipeline.open_split(input_pipeline.prepare(config, str(workdir)), 'validation', 1, 'own').index
  record = json.loads((workdir / input_pipeline.SPLITS_FILE).read_text())
  assert record['splits']['validation'] == first.tolist()
  # The record is what a later run, evaluation or prediction in the workdir reads, not a new carve:
  moved = record['splits']['train'][0]
  record['splits']['train'][0], record['splits']['validation'][0] = record['splits']['validation'][0], moved
  (workdir / input_pipeline.SPLITS_FILE).write_text(json.dumps(record))
  again = input_pipeline.open_split(input_pipeline.prepare(config, str(workdir)), 'validation', 1, 'own').index
  assert again[0] == moved and again[1:].tolist() == first[1:].tolist()
  seeded = input_pipeline.prepare(folder_config(three, **{'dataset.data_dir': str(tmp_path / 'data'),
                                                          'dataset.split_seed': 1}), str(tmp_path / 'w2'))
  assert input_pipeline.open_split(seeded, 'validation', 1, 'own').index.tolist() != first.tolist()


def test_own_split_folders_are_kept_and_a_class_missing_from_one_is_fine(twelve, tmp_path):
  dataset = input_pipeline.prepare(folder_config(twelve, **{'dataset.data_dir': str(tmp_path)}), str(tmp_path / 'w'))
  assert input_pipeline.Task.of(dataset).classes == tuple(f'class{c:02d}' for c in range(12))
  assert list(dataset.info.metadata['bad_files']) == ['train/class00/corrupt.jpg']
  assert split_sizes(dataset) == {'train': 86, 'validation': 10, 'test': 22}  # test: its own, 11 classes of 2
  test = input_pipeline.open_split(dataset, 'test', 1, 'own')
  assert set(test.labels()) == set(range(11))


def test_config_checks_name_the_field(three):
  with pytest.raises(errors.ConfigError, match="split_scheme='pairs' is invalid: must be 'own'"):
    configuration.validate(folder_config(three, **{'dataset.split_scheme': 'pairs'}))
  with pytest.raises(errors.ConfigError, match='image_size=0 is invalid'):
    configuration.validate(folder_config(three, **{'dataset.image_size': 0}))
  with pytest.raises(errors.ConfigError, match="neither a comic_faces config .* nor a registered TFDS dataset"):
    configuration.validate(folder_config(three, **{'dataset.name': 'no_such_dataset_anywhere'}))
  with pytest.raises(errors.ConfigError, match='best_by'):
    configuration.validate(folder_config(three, best_by='val_class_accuracy_class7'))
  configuration.validate(folder_config(three, best_by='val_class_accuracy_class2'))


def png(pixels: np.ndarray) -> bytes:
  out = io.BytesIO()
  synthetic.Image.fromarray(pixels).save(out, 'PNG')
  return out.getvalue()


class TinyStripes(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset of local files, registered by this module: 20x20 stripes, 3 kinds."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = epath.Path(__file__).parent  # TFDS' default looks for a package: tests/ is none

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'picture': tfds.features.Image(shape=(20, 20, 3)),
        'kind': tfds.features.ClassLabel(names=['left', 'right', 'up'])}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(30, 0), 'test': self._generate_examples(9, 1)}

  def _generate_examples(self, n, seed):
    for i in range(n):
      img = synthetic.render_stripes(seed, i % 3, 3, i, 20).convert('RGB').resize((20, 20))
      yield i, {'picture': png(np.asarray(img)), 'kind': i % 3}


class NeedsTensorflow(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset whose preparing needs TensorFlow (TFDS encodes its numpy images with it)."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = epath.Path(__file__).parent  # TFDS' default looks for a package: tests/ is none

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 3)), 'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {'image': np.zeros((8, 8, 3), np.uint8), 'label': i % 2}


class NeedsDownload(tfds.core.GeneratorBasedBuilder):
  """A TFDS dataset whose preparing downloads a file (from a port where nothing listens here)."""
  VERSION = tfds.core.Version('1.0.0')
  pkg_dir_path = epath.Path(__file__).parent

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(8, 8, 3)), 'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(dl_manager.download('http://127.0.0.1:9/images.npz'))}

  def _generate_examples(self, path):
    raise AssertionError(f'{path} was downloaded: nothing listens on port 9 here')


class NeedsManualFiles(NeedsDownload):
  """A TFDS dataset prepared from files a user puts in its manual dir."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put images.npz in the manual dir.'

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(dl_manager.manual_dir / 'images.npz')}


def tfds_config(data_dir, **fields):
  return folder_config('', **{'dataset.name': 'tiny_stripes', 'dataset.data_dir': str(data_dir),
                              'dataset.image_key': 'picture', 'dataset.label_key': 'kind',
                              'dataset.image_size': 16, 'dataset.mode': 'L', **fields})


def test_tfds_dataset_registered_here_is_prepared_and_read_by_name(tmp_path):
  config = tfds_config(tmp_path / 'data')
  assert configuration.classes(config) is None  # not prepared yet: its names come with the build
  configuration.validate(config)
  dataset = input_pipeline.prepare(config, str(tmp_path / 'w'))
  assert (tmp_path / 'data' / 'tiny_stripes' / '1.0.0').is_dir()  # where TFDS prepares it
  task = input_pipeline.Task.of(dataset)
  assert task.classes == ('left', 'right', 'up') and task.image_shape == (16, 16, 1)  # resized, grey
  assert split_sizes(dataset) == {'train': 27, 'validation': 3, 'test': 9}  # its own test, validation carved
  test = input_pipeline.open_split(dataset, 'test', 4, 'own')
  arrays = test.arrays()
  assert arrays['image'].shape == (9, 16, 16, 1) and sorted(arrays['label'].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  raw = dataset.as_data_source('test')[0]  # the whole build reads train first: test's first is position 30
  assert test.index[0] == 30 and raw['kind'] == arrays['label'][0]
  np.testing.assert_array_equal(arrays['image'][0], imaging.load_image(raw['picture'], 16, 'L'))
  assert configuration.classes(config) == ('left', 'right', 'up')  # prepared: known before a run


def test_tfds_split_strings(tmp_path):
  config = tfds_config(tmp_path / 'data', **{'dataset.splits': {
      'train': 'train[:80%]', 'validation': 'train[80%:]', 'test': 'test[:3]'}})
  dataset = input_pipeline.prepare(config, str(tmp_path / 'w'))
  parts = {s: input_pipeline.open_split(dataset, s, 1, 'own').index.tolist() for s in input_pipeline.SPLITS}
  assert parts == {'train': list(range(24)), 'validation': list(range(24, 30)), 'test': [30, 31, 32]}


def test_preparing_that_needs_tensorflow_says_so(tmp_path):
  config = folder_config('', **{'dataset.name': 'needs_tensorflow', 'dataset.data_dir': str(tmp_path)})
  with pytest.raises(input_pipeline.PrepareError, match='needs a module .*pip install tensorflow-cpu'):
    input_pipeline.prepare(config, str(tmp_path / 'w'))


@pytest.mark.parametrize('name, cause', [('needs_download', 'Connection refused'),
                                         ('needs_manual_files', 'does not exist or is empty')])
def test_preparing_that_needs_a_download_or_manual_files_says_so(name, cause, tmp_path, monkeypatch):
  monkeypatch.setattr('tensorflow_datasets.core.download.downloader.MAX_RETRIES', 0)  # TFDS backs off for minutes offline
  config = folder_config('', **{'dataset.name': name, 'dataset.data_dir': str(tmp_path)})
  with pytest.raises(input_pipeline.PrepareError, match=f'needs a download .*{cause}.*tfds build {name} '):
    input_pipeline.prepare(config, str(tmp_path / 'w'))
  assert not list(tmp_path.glob(f'{name}/*/*.array_record*'))  # nothing half-prepared left to be read


def resident_programs(run: train.Run) -> dict[str, str]:
  """The compiled programs of `run`'s epoch on resident data (train, then evaluate), as text."""
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  steps, feed = run.steps, run.train
  replicated = lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=steps.replicated)
  epoch = {'order': replicated(np.zeros(len(feed.split.source), np.int32)), 'first': replicated(np.int32(0))}
  state, hparams, data, sums = jax.tree.map(spec, (run.state, run.hparams, feed.data, steps.put_sums(1)))
  positions, index = jax.tree.map(spec, run.validation.eval_inputs)
  return {'train': steps.train_resident.lower(state, hparams, data, epoch, sums, steps.steps_per_call).as_text(),
          'eval': steps.eval_resident.lower(state, data['image'], positions, index).as_text()}


def test_the_same_images_as_a_folder_run_comic_faces_own_programs(source_40, tmp_path):
  """The generic path is not slower than comic_faces' own: the same images as a 2-class
  folder, its splits carved to comic_faces' sizes (bench.generic_data's two cases), train
  and evaluate by the same compiled programs on resident builds of the same shape."""
  own = tiny_config(**{'dataset.name': 'comic_faces/rgb24', 'dataset.manual_dir': str(source_40),
                       'dataset.data_dir': str(tmp_path / 'tfds')})
  same = tiny_config(**{'dataset.name': 'folder', 'dataset.image_size': 24, 'dataset.mode': 'RGB',
                        'dataset.split_scheme': 'own', 'dataset.data_dir': str(tmp_path / 'tfds'),
                        'dataset.manual_dir': str(generic_data.as_folder(source_40, tmp_path / 'folder')),
                        **{f'dataset.{k}': v for k, v in generic_data.same_splits(own, tmp_path / 'build').items()}})
  runs = [train.setup(config, str(tmp_path / name)) for name, config in (('own', own), ('folder', same))]
  try:
    sizes = [(r.train.split.num_examples, r.validation.split.num_examples, len(r.train.split.source)) for r in runs]
    assert sizes[0] == sizes[1] and all(r.train.resident and r.validation.resident for r in runs), sizes
    assert [r.builder.builder.name for r in runs] == ['comic_faces', 'image_folder']  # two builders
    own_programs, folder_programs = (resident_programs(r) for r in runs)
    for name, text in own_programs.items():
      assert folder_programs[name] == text, f'the folder\'s {name} program differs from comic_faces\' own'
  finally:
    for run in runs:
      run.close()


@pytest.mark.slow
@pytest.mark.parametrize('source, model', [('three', 'cnn'), ('three', 'mlp'), ('three', 'resnet'), ('twelve', 'cnn')])
def test_folder_trains_end_to_end(source, model, request, tmp_path):
  config = folder_config(request.getfixturevalue(source), model)
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  classes = 3 if source == 'three' else 12
  assert len(results['history']) == 1 and np.isfinite(results['test_loss'])
  assert results['num_test_examples'] == (4 if source == 'three' else 22)
  assert len(json.loads((tmp_path / 'w' / 'task.json').read_text())['classes']) == classes
  assert (tmp_path / 'w' / input_pipeline.SPLITS_FILE).exists()


@pytest.mark.slow
@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason='the shared real sample is absent')
def test_real_sample_as_a_two_class_folder(tmp_path):
  source = tmp_path / 'real'
  source.mkdir()
  (source / 'face').symlink_to(REAL_SAMPLE / 'face')
  (source / 'comic').symlink_to(REAL_SAMPLE / 'comics')
  config = folder_config(source, **{'dataset.mode': 'L', 'dataset.image_size': 32})
  results = train.train_and_evaluate(config, str(tmp_path / 'w'))
  dataset = input_pipeline.prepare(config, str(tmp_path / 'w'))
  assert input_pipeline.Task.of(dataset) == input_pipeline.Task(('comic', 'face'), (32, 32, 1))
  assert dataset.info.splits['train'].num_examples == 120 and not dataset.info.metadata['bad_files']
  assert results['num_test_examples'] == 12 and len(results['history']) == 1
