"""The comic_faces builder, built for real (array_record, no TensorFlow) from generated folders."""
import collections
import hashlib
import json
import pathlib
import shutil
import zipfile

import numpy as np
from PIL import Image
import pytest

from comicface import build_dataset, synthetic
from conftest import DUMMY_DATA, REAL_SAMPLE, build
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces


def read_split(builder, split):
  return list(builder.as_data_source(split))


def read_all(builder):
  return {s: read_split(builder, s) for s in ('train', 'validation', 'test')}


@pytest.mark.parametrize('config, shape', [('gray128', (128, 128, 1)), ('rgb24', (24, 24, 3))])
def test_dummy_data_builds_each_config(tmp_path, config, shape):
  builder = build(DUMMY_DATA, tmp_path, config)
  sizes = {s: builder.info.splits[s].num_examples for s in ('train', 'validation', 'test')}
  assert sizes == {'train': 38, 'validation': 4, 'test': 10}  # 26 pairs, split by pair hash
  for ex in read_split(builder, 'validation'):
    assert ex['image'].shape == shape and ex['image'].dtype == np.uint8
    assert ex['label'] in (0, 1)
    assert ex['filename'].decode() == f"{('comic', 'face')[ex['label']]}/{ex['pair_id'].decode()}.jpg"


def test_splits_are_disjoint_by_pair_and_complete(source_40, tmp_path):
  splits = read_all(build(source_40, tmp_path))
  owners = collections.defaultdict(set)
  for split, examples in splits.items():
    for ex in examples:
      owners[ex['pair_id']].add(split)
  assert len(owners) == 40 and all(len(s) == 1 for s in owners.values())
  assert sum(map(len, splits.values())) == 80
  for examples in splits.values():  # each pair's face and comic both present
    assert sorted(collections.Counter(e['pair_id'] for e in examples).values()) == [2] * (len(examples) // 2)


def test_labels_follow_folders(source_40, tmp_path):
  builder = build(source_40, tmp_path)
  assert builder.info.features['label'].names == ['comic', 'face']
  for ex in read_split(builder, 'train'):
    assert ex['filename'].decode().startswith(('comic/', 'face/')[ex['label']])


def test_rebuild_is_byte_identical(source_40, tmp_path):
  def digest(builder):
    files = sorted(pathlib.Path(builder.data_dir).glob('*.array_record*'))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
  first = digest(build(source_40, tmp_path / 'a'))
  assert first and first == digest(build(source_40, tmp_path / 'b'))


def test_index_in_class_is_sorted_name_order(source_40, tmp_path):
  examples = sum(read_all(build(source_40, tmp_path)).values(), [])
  comics = sorted((e['index_in_class'], e['pair_id'].decode()) for e in examples if e['label'] == 0)
  assert [p for _, p in comics] == sorted(str(i) for i in range(40))  # '10' before '2'
  assert [i for i, _ in comics] == list(range(40))


@pytest.mark.parametrize('where', ['outer', 'inner', 'zip_itself', 'folder_with_zip'])
def test_finds_v2_layout_folder_or_zip(source_40, tmp_path, where):
  if where == 'outer':
    manual = source_40
  elif where == 'inner':
    manual = source_40 / synthetic.V2_INNER
  else:
    zpath = tmp_path / 'zipdir' / 'comic-faces-paired-synthetic-v2.zip'
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, 'w') as z:
      for f in sorted(source_40.rglob('*.jpg')):
        z.write(f, f.relative_to(source_40))
      z.writestr('__MACOSX/face2comics_v2.0.0_by_Sxela/._x', b'junk')
    manual = zpath if where == 'zip_itself' else zpath.parent
  splits = read_all(build(manual, tmp_path / 'data'))
  assert sum(map(len, splits.values())) == 80


def test_v1_layout_and_stray_files(source_copy, tmp_path):
  (source_copy / 'faces').rename(source_copy / 'face')
  for name in ('.DS_Store', 'Thumbs.db', 'README.txt'):
    (source_copy / 'face' / name).write_bytes(b'not an image')
  (source_copy / 'README.md').write_text('hello')
  builder = build(source_copy, tmp_path / 'data')
  assert sum(map(len, read_all(builder).values())) == 80
  assert builder.info.metadata['bad_files'] == {}


def test_unreadable_images_are_skipped_counted_and_listed(source_copy, tmp_path):
  (source_copy / 'faces' / '0.jpg').write_bytes(b'')
  (source_copy / 'comics' / '1.jpg').write_text('a text file named .jpg')
  data = (source_copy / 'faces' / '2.jpg').read_bytes()
  (source_copy / 'faces' / '2.jpg').write_bytes(data[: len(data) // 3])  # truncated JPEG
  builder = build(source_copy, tmp_path / 'data', max_bad_fraction=0.5)
  assert sum(map(len, read_all(builder).values())) == 77
  bad = builder.info.metadata['bad_files']
  assert sorted(bad) == ['comic/1.jpg', 'face/0.jpg', 'face/2.jpg']
  saved = json.loads((pathlib.Path(builder.data_dir) / 'metadata.json').read_text())
  assert sorted(saved['bad_files']) == sorted(bad)  # recorded with the build


def test_too_many_bad_images_fail_the_build(source_copy, tmp_path):
  for i in range(10):  # 10 of 80 bad: 12.5% overall, more than 5% in some split
    (source_copy / 'faces' / f'{i}.jpg').write_bytes(b'junk')
  with pytest.raises(comic_faces.TooManyBadImagesError, match='unreadable'):
    build(source_copy, tmp_path / 'data')
  assert not list((tmp_path / 'data').rglob('*.array_record*'))  # nothing half-written kept


def test_unpaired_images_are_kept_and_counted(source_copy, tmp_path):
  (source_copy / 'comics' / '5.jpg').unlink()
  (source_copy / 'faces' / '6.jpg').unlink()
  builder = build(source_copy, tmp_path / 'data')
  assert sum(map(len, read_all(builder).values())) == 78
  assert builder.info.metadata['unpaired'] == ['comic/6', 'face/5']


def test_decompression_bomb_refused_per_file(source_copy, tmp_path):
  Image.new('1', (9000, 9000)).save(source_copy / 'faces' / '3.jpg', 'PNG')
  builder = build(source_copy, tmp_path / 'data', max_bad_fraction=0.5)
  assert list(builder.info.metadata['bad_files']) == ['face/3.jpg']


def test_mixed_modes_and_formats_build(source_copy, tmp_path):
  rgb = Image.open(source_copy / 'faces' / '0.jpg')
  rgb.convert('L').save(source_copy / 'faces' / '0.jpg')
  rgb.convert('RGBA').save(source_copy / 'faces' / '1.png')
  rgb.convert('P', palette=Image.Palette.ADAPTIVE).save(source_copy / 'faces' / '2.png')
  rgb.convert('CMYK').save(source_copy / 'faces' / '3.jpg')
  Image.fromarray(np.asarray(rgb.convert('L'), np.uint16) * 257).save(source_copy / 'faces' / '4.png')
  for i in (1, 2, 4):
    (source_copy / 'faces' / f'{i}.jpg').unlink()
  builder = build(source_copy, tmp_path / 'data', config='gray128')
  examples = {e['filename'].decode(): e for e in sum(read_all(builder).values(), [])}
  assert len(examples) == 80 and builder.info.metadata['bad_files'] == {}
  ref = examples['face/0.jpg']['image'].astype(float)
  for name in ('face/1.png', 'face/2.png', 'face/3.jpg', 'face/4.png'):
    assert np.abs(examples[name]['image'] - ref).mean() < 6, name


@pytest.mark.parametrize('setup, message', [
    (lambda d: shutil.rmtree(d), 'does not exist'),
    (lambda d: [shutil.rmtree(d / 'comics'), shutil.rmtree(d / 'faces')], 'an empty folder'),
    (lambda d: shutil.rmtree(d / 'comics'), "Found instead: \\['faces'\\]"),
    (lambda d: [p.unlink() for p in (d / 'faces').iterdir()], 'faces holds no images'),
])
def test_layout_errors_name_expected_and_found(source_copy, tmp_path, setup, message):
  setup(source_copy)
  with pytest.raises(comic_faces.LayoutError, match=message) as err:
    build(source_copy, tmp_path / 'data')
  assert 'comics/ and faces/' in str(err.value)


def test_fingerprint_tracks_the_source(source_40, source_copy):
  items = comic_faces.list_items(comic_faces.find_root(source_40))
  assert comic_faces.fingerprint(items) == comic_faces.fingerprint(comic_faces.list_items(comic_faces.find_root(source_copy)))
  (source_copy / 'faces' / '7.jpg').write_bytes(b'changed')
  assert comic_faces.fingerprint(items) != comic_faces.fingerprint(comic_faces.list_items(comic_faces.find_root(source_copy)))


@pytest.mark.skipif(not REAL_SAMPLE.exists(), reason='shared/real_sample is absent')
def test_real_sample_builds_and_pairs_up(tmp_path):
  files = {c: sorted(p for p in (REAL_SAMPLE / c).iterdir()) for c in ('comics', 'face')}
  builder = build(REAL_SAMPLE, tmp_path, config='gray128')
  examples = sum(read_all(builder).values(), [])
  assert builder.info.metadata['bad_files'] == {} and builder.info.metadata['unpaired'] == []
  assert len(examples) == len(files['comics']) + len(files['face']) == 120
  pairs = collections.Counter(e['pair_id'] for e in examples)
  assert set(pairs.values()) == {2}
  suffixes = {p.suffix.lower() for p in files['face'] + files['comics']}
  sizes = {Image.open(p).size for p in files['face'] + files['comics']}
  assert {'.png', '.jpg'} <= suffixes and len(sizes) > 1  # mixed formats and sizes went in
  assert all(e['image'].shape == (128, 128, 1) for e in examples)


def test_build_command_without_tensorflow(tmp_path, capsys):
  build_dataset.main(['--manual_dir', str(DUMMY_DATA), '--configs', 'rgb24,gray128',
                      '--data_dir', str(tmp_path)])
  out = capsys.readouterr().out
  assert "comic_faces/rgb24: {'train': 38, 'validation': 4, 'test': 10}" in out
  assert (tmp_path / 'comic_faces' / 'gray128' / '1.0.0' / 'dataset_info.json').exists()


def _damage(build_folder: pathlib.Path) -> pathlib.Path:
  shard = next(build_folder.glob('comic_faces-train.array_record-*'))
  data = bytearray(shard.read_bytes())
  data[len(data) // 3:len(data) // 3 + 256] = bytes(256)
  shard.write_bytes(bytes(data))
  return shard


@pytest.mark.parametrize('harm', ['damaged_shard', 'deleted_info', 'deleted_shard'])
def test_a_damaged_or_half_deleted_build_is_set_aside_and_rebuilt(source_40, tmp_path, caplog, harm):
  folder = pathlib.Path(build(source_40, tmp_path).data_dir)
  expected = read_all(build(source_40, tmp_path / 'reference'))
  if harm == 'damaged_shard':
    _damage(folder)
  else:
    next(folder.glob('dataset_info.json' if harm == 'deleted_info' else '*train.array_record*')).unlink()
  caplog.set_level('WARNING')
  rebuilt = read_all(build(source_40, tmp_path))
  assert f'The build in {folder} is damaged' in caplog.text
  assert [e['filename'] for s in rebuilt.values() for e in s] == [
      e['filename'] for s in expected.values() for e in s]
  assert len(list(folder.parent.glob('1.0.0.damaged-*'))) == 1  # set aside, not deleted


def test_a_damaged_build_of_other_source_files_names_its_folder(source_40, source_copy, tmp_path):
  folder = pathlib.Path(build(source_40, tmp_path).data_dir)
  _damage(folder)
  (source_copy / 'faces' / '0.jpg').unlink()  # other files
  with pytest.raises(build_dataset.CorruptBuildError, match=f'The build in {folder} is damaged'):
    build(source_copy, tmp_path)


def test_damage_found_while_reading_names_the_build(source_40, tmp_path):
  from comicface import input_pipeline  # pylint: disable=g-import-not-at-top
  builder = build(source_40, tmp_path)
  split = input_pipeline.open_split(builder, 'train', 8)
  split.records(range(split.num_examples))
  _damage(pathlib.Path(builder.data_dir))
  with pytest.raises(build_dataset.CorruptBuildError, match=f'Reading the build in {builder.data_dir} failed'):
    split.records(range(split.num_examples))
