"""Augmentation on the devices: each op's output on known images, the config's checks, the
rename of augment_hflip, and a run with augmentation (and the parameters' average, and
accumulation) killed mid-epoch and resumed, bitwise the uninterrupted one."""
import json
import signal
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from comicface import augment, configuration, errors, inference, workdir as workdirs
from conftest import ROOT, tiny_config

KEYS = [jax.random.PRNGKey(i) for i in range(4)]


def images(b=8, h=12, w=10, c=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (b, h, w, c), dtype=np.uint8))


def run(spec, key, x, labels=None, num_classes=None):
  labels = jnp.arange(x.shape[0]) if labels is None else labels
  return jax.device_get(augment.apply(augment.parse(spec), key, x, labels, num_classes or x.shape[0]))


def test_flip_lr_mirrors_each_image_or_leaves_it():
  x = images()
  out, labels = run('flip_lr', KEYS[0], x)
  flipped = [np.array_equal(o, np.asarray(i)[:, ::-1]) for o, i in zip(out, x)]
  kept = [np.array_equal(o, i) for o, i in zip(out, x)]
  assert all(f != k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
  assert out.dtype == np.uint8 and labels.tolist() == list(range(8))


@pytest.mark.parametrize('mode', ['constant', 'reflect'])
def test_random_crop_is_a_shifted_window_of_the_padded_image(mode):
  x, pad = images(), 3
  out, _ = run(f'random_crop(pad={pad}, mode={mode!r})', KEYS[1], x)
  assert out.shape == x.shape and out.dtype == np.uint8
  padded = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  offsets = []
  for o, p in zip(out, padded):
    found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
             if np.array_equal(o, p[i:i + x.shape[1], j:j + x.shape[2]])]
    assert found, 'not a window of the padded image'
    offsets.append(found[0])
  assert len(set(offsets)) > 1  # each image its own offset


def test_random_resized_crop_keeps_the_size_and_the_whole_image_is_itself():
  x = images(h=16, w=16)
  out, labels = run('random_resized_crop(scale=(0.08, 1.0))', KEYS[2], x)
  assert out.shape == x.shape and out.dtype == np.float32 and labels.shape == (8,)
  assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3 and not np.allclose(out, x)
  whole, _ = run('random_resized_crop(scale=(1.0, 1.0), ratio=(1.0, 1.0))', KEYS[2], x)
  np.testing.assert_allclose(whole, x, atol=1e-3)  # a window of the whole image, resized by 1


def test_brightness_shifts_each_image_and_stays_in_range():
  grey = jnp.full((8, 6, 6, 1), 128, jnp.uint8)
  out, _ = run('brightness(0.2)', KEYS[0], grey)
  shift = out - 128.0
  assert np.allclose(shift, shift[:, :1, :1, :1]) and np.abs(shift).max() <= 0.2 * 255 + 1e-3
  assert np.abs(shift.mean(axis=(1, 2, 3))).min() > 0 and len(np.unique(shift[:, 0, 0, 0])) == 8
  extremes, _ = run('brightness(0.5)', KEYS[1], jnp.asarray(np.tile([0, 255], 16).reshape(8, 2, 2, 1), jnp.uint8))
  assert extremes.min() == 0 and extremes.max() == 255  # clipped where the shift went past the range


def partner(row, i):
  """The other class in example i's soft label (its partner's: labels are positions), or i."""
  others = np.flatnonzero((row > 0) & (np.arange(len(row)) != i))
  assert len(others) <= 1
  return int(others[0]) if len(others) else i


def test_mixup_blends_images_and_labels_in_one_proportion():
  x = images(c=1)
  out, soft = run('mixup(0.4)', KEYS[3], x)
  assert soft.shape == (8, 8) and soft.dtype == np.float32
  np.testing.assert_allclose(soft.sum(-1), 1, rtol=1e-6)
  mixed = [i for i, row in enumerate(soft) if partner(row, i) != i]
  assert mixed and np.allclose(soft[mixed, mixed], soft[mixed[0], mixed[0]])  # one weight for the batch
  for i, row in enumerate(soft):
    j = partner(row, i)
    np.testing.assert_allclose(out[i], row[i] * x[i] + (1 - row[i]) * x[j], rtol=1e-5, atol=1e-3)


def test_cutmix_pastes_a_box_in_the_labels_proportion():
  """Each image a constant of its own: the share of each value is its image's label."""
  x = jnp.asarray(np.arange(8, dtype=np.uint8)[:, None, None, None] * 30 * np.ones((1, 10, 12, 1), np.uint8))
  shares = []
  for key in KEYS:
    out, soft = run('cutmix(1.0)', key, x)
    assert out.shape == x.shape and out.dtype == np.uint8
    np.testing.assert_allclose(soft.sum(-1), 1, rtol=1e-6)
    for i, row in enumerate(soft):
      j = partner(row, i)
      own = np.mean(out[i] == x[i, 0, 0, 0])
      np.testing.assert_allclose(own, row[i], atol=1e-6)
      np.testing.assert_allclose(np.mean(out[i] == x[j, 0, 0, 0]), row[j] if j != i else 1, atol=1e-6)
      shares.append(own)
  assert 0 < min(shares) < 1  # the premise: boxes were pasted


def test_ops_run_in_order_and_labels_stay_soft_after_mixing():
  out, soft = run('mixup(0.2)|flip_lr|random_crop(pad=2)', KEYS[0], images(), num_classes=10)
  assert out.shape == (8, 12, 10, 3) and soft.shape == (8, 10)
  np.testing.assert_allclose(soft.sum(-1), 1, rtol=1e-6)
  assert run('', KEYS[0], images())[0].dtype == np.uint8  # none: the batch as it came


@pytest.mark.parametrize('spec, message', [
    ('flip_lr|sharpen(2)', "unknown op 'sharpen'"),
    ('random_crop(pad=-1)', 'pad must be an integer >= 0'),
    ('mixup(alpha=0)', 'alpha must be > 0'),
    ('brightness(0.2, 3)', 'too many positional arguments'),
    ('random_crop(pad=x)', 'is not an op')])
def test_a_bad_op_is_a_config_error_naming_the_known_ones(spec, message):
  with pytest.raises(errors.ConfigError, match='Known ops|known ops') as raised:
    configuration.validate(tiny_config(augment=spec))
  assert message in str(raised.value) and 'flip_lr' in str(raised.value) and 'random_resized_crop' in str(raised.value)


def test_a_workdir_of_augment_hflip_reads_as_flip_lr(tmp_path):
  """A config.json of a release with augment_hflip (and without augment, ema_decay and
  grad_accum_steps) belongs to the config with the same augmentation, and its config loads."""
  for hflip, augment_now in ((True, 'flip_lr'), (False, '')):
    config = tiny_config(augment=augment_now)
    recorded = {k: v for k, v in workdirs.identity(config).items() if k not in ('augment', 'ema_decay', 'grad_accum_steps')}
    folder = tmp_path / str(hflip)
    workdirs.write_json(folder / 'config.json', {'identity': {**recorded, 'augment_hflip': hflip}, 'config': {
        **{k: v for k, v in config.to_dict().items() if k not in ('augment', 'ema_decay', 'grad_accum_steps')},
        'augment_hflip': hflip}})
    assert workdirs.check(config, str(folder))
    with pytest.raises(workdirs.WorkdirConflictError, match='augment'):
      workdirs.check(tiny_config(augment='flip_lr' if not hflip else ''), str(folder))
    loaded = workdirs.recorded_config(str(folder))
    assert loaded.augment == augment_now and 'augment_hflip' not in loaded
    assert (loaded.ema_decay, loaded.grad_accum_steps) == (0.0, 1)


AUGMENTED = ["--config.augment=flip_lr|random_crop(pad=4)|mixup(0.2)", '--config.ema_decay=0.9',
             '--config.grad_accum_steps=2', '--config.num_epochs=2']


@pytest.mark.slow
def test_a_run_with_augmentation_killed_mid_epoch_resumes_bitwise(tmp_path):
  """Augmentation, the average and accumulation on: kill -9 in the second epoch, then the same
  command, ends bitwise where the uninterrupted run ends (its average included)."""
  from test_reliability import assert_same_params, final_params, main_cmd, run_main, wait_for  # pylint: disable=g-import-not-at-top
  straight = tmp_path / 'straight'
  r = run_main(straight, *AUGMENTED)
  assert r.returncode == 0, r.stderr[-3000:]
  history = json.loads((straight / 'results.json').read_text())['history']
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(main_cmd(workdir, *AUGMENTED), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  first = history[0]['step']
  wait_for(proc, f' step {first + 1}/')
  while not (workdir / 'checkpoints' / str(first)).exists():  # the first epoch's checkpoint written
    wait_for(proc, ' step ')  # (else the run ended first: wait_for fails)
  wait_for(proc, ' step ')  # mid second epoch
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL and not (workdir / 'results.json').exists()  # the kill took
  r = run_main(workdir, *AUGMENTED)
  assert r.returncode == 0 and f'resumed from step {first}' in r.stderr, r.stderr[-3000:]
  assert 'resident on the devices' in r.stderr  # the premise: the augmented batches come from resident data
  assert_same_params(workdir, straight)
  a, b = (json.loads((d / 'results.json').read_text()) for d in (workdir, straight))
  assert a['history'] == b['history'] and a['test_accuracy'] == b['test_accuracy']
  _, state = final_params(workdir)
  assert 'ema_params' in state and any(not np.array_equal(p, e) for p, e in zip(
      jax.tree.leaves(state['params']), jax.tree.leaves(state['ema_params'])))
  assert 'ema_params' in inference.load(str(workdir)).state  # a restored model predicts with the average
