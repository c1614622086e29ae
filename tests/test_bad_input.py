"""The bad-input table, through main.py: each row a clear error or a counted skip,
and nothing already written lost. (Config values and a foreign workdir: test_train.py
and test_input_pipeline.py; unreadable dataset images: test_dataset_builder.py.)"""
import shutil
import subprocess

from PIL import Image
import pytest

from conftest import read_predictions
from test_reliability import run_main

pytestmark = pytest.mark.slow  # each test starts main.py or trains for seconds


def test_batch_not_divisible_by_devices(tmp_path):
  r = run_main(tmp_path / 'w', '--config.batch_size=6',
               env={'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert r.returncode != 0
  assert 'config.batch_size=6 is invalid: must be a positive multiple of the device count (4)' in r.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('make, found', [
    (lambda d: None, 'does not exist'),
    (lambda d: d.mkdir(), 'an empty folder'),
    (lambda d: [(d / 'photos').mkdir(parents=True), (d / 'notes.txt').write_text('x')],
     "Found instead: ['notes.txt', 'photos']"),
])
def test_manual_dir_missing_empty_or_wrong(tmp_path, make, found):
  manual = tmp_path / 'manual'
  make(manual)
  r = run_main(tmp_path / 'w', f'--config.dataset.manual_dir={manual}',
               f'--config.dataset.data_dir={tmp_path / "data"}')
  assert r.returncode != 0
  assert 'LayoutError' in r.stderr and found in r.stderr and 'comics/ and faces/' in r.stderr
  assert 'Traceback' not in r.stderr


def test_predict_without_checkpoint(tmp_path):
  r = run_main(tmp_path / 'w', '--mode=predict', '--images=x.jpg')
  assert r.returncode == 1 and 'NoRunError: ' in r.stderr and 'holds no run' in r.stderr


def test_predict_bad_files_get_error_lines(tmp_path):
  workdir = tmp_path / 'w'
  assert run_main(workdir, '--config.num_epochs=1').returncode == 0
  imgs = tmp_path / 'imgs'
  (imgs / 'a_directory.jpg').mkdir(parents=True)
  Image.new('RGB', (300, 300), (200, 150, 120)).save(imgs / 'good.jpg')
  (imgs / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
  (imgs / 'notes.png').write_text('not an image at all')
  Image.new('1', (9000, 9000)).save(imgs / 'huge.png')
  r = run_main(workdir, '--config.num_epochs=1', '--mode=predict',
               f'--images={imgs / "*"},{imgs / "missing.jpg"}')
  shown, errors = read_predictions(r.stdout)
  assert r.returncode == 1  # some failed
  label, pairs = shown[str(imgs / 'good.jpg')]
  assert label in ('face', 'comic') and [name for name, _ in pairs] == ['comic', 'face']
  assert set(errors) == {str(imgs / bad) for bad in ('a_directory.jpg', 'corrupt.jpg', 'notes.png', 'huge.png',
                                                     'missing.jpg')}
  assert 'pixels' in errors[str(imgs / 'huge.png')]


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs (needs root; skipped elsewhere)."""
  mnt = tmp_path / 'disk'
  mnt.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(mnt)],
                    capture_output=True).returncode != 0:
    pytest.skip('cannot mount a tmpfs here (needs root)')
  yield mnt
  subprocess.run(['umount', '-l', str(mnt)], check=False)


def test_disk_full_while_checkpointing(tmp_path, small_disk):
  workdir = small_disk / 'w'
  data = [f'--config.dataset.data_dir={tmp_path / "data"}']
  first = run_main(workdir, '--config.num_epochs=1', *data)
  assert first.returncode == 0, first.stderr[-3000:]
  (workdir / 'results.json').unlink()
  free = shutil.disk_usage(small_disk).free
  (small_disk / 'filler').write_bytes(b'\0' * max(0, free - 16 * 1024))  # leave 16 KiB
  r = run_main(workdir, '--config.num_epochs=2', *data)
  assert r.returncode != 0
  assert 'CheckpointError' in r.stderr and 'No space left on device' in r.stderr
  assert 'The checkpoints already there are intact' in r.stderr
  (small_disk / 'filler').unlink()
  step = min(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())
  r = run_main(workdir, '--config.num_epochs=1', '--mode=evaluate', f'--step={step}', *data)
  assert r.returncode == 0, r.stderr[-3000:]  # the previous checkpoint still loads

