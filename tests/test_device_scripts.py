"""The GPU machine's two scripts: bench/device_wheels.sh (its wheels, made here; needs PyPI) and
bench/device_check.sh (the one call there), the latter run on this machine's CPU."""
import os
import pathlib
import subprocess
import sys

from packaging import tags, utils
import pytest

from conftest import ROOT

LIMIT = 64 * 2 ** 20  # the device tool's limit on the tree and the carried wheels together
# Python 3.12 on manylinux_2_28 x86_64 (the GPU machine's glibc is newer) accepts these tags.
PLATFORMS = [f'manylinux_2_{n}_x86_64' for n in range(28, 4, -1)] + [
    'manylinux2014_x86_64', 'manylinux2010_x86_64', 'manylinux1_x86_64']
ACCEPTED = {*tags.cpython_tags((3, 12), ['cp312', 'abi3', 'none'], PLATFORMS),
            *tags.compatible_tags((3, 12), 'cp312', PLATFORMS)}
ROOTS = {'tensorflow-datasets', 'importlib-resources', 'array-record', 'grain', 'ml-collections', 'simplejpeg',
         'tensorboardx'}


def tree_bytes() -> int:
  """The bytes of what travels with the carried folder: tracked and untracked, unignored files."""
  names = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split('\0')
  return sum((ROOT / n).stat().st_size for n in names if n and (ROOT / n).is_file())


@pytest.mark.slow
def test_device_wheels_one_cp312_manylinux_wheel_per_package_under_the_limit(tmp_path):
  dest = tmp_path / 'wheels'
  r = subprocess.run(['bash', str(ROOT / 'bench' / 'device_wheels.sh'), str(dest)], capture_output=True, text=True,
                     env={**os.environ, 'PYTHON': sys.executable}, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "carry=['" in r.stdout and 'bench/device_check.sh' in r.stdout, r.stdout[-2000:]
  wheels = sorted(dest.glob('*.whl'))
  parsed = {w: utils.parse_wheel_filename(w.name) for w in wheels}
  names = [name for name, *_ in parsed.values()]
  assert len(names) == len(set(names)), f'two versions of one package: {sorted(names)}'
  assert ROOTS | {'promise'} <= set(names), ROOTS | {'promise'} - set(names)
  assert not {'jax', 'numpy', 'flax', 'protobuf'} & set(names), 'a package the GPU machine has was carried'
  for wheel, (_, _, _, wheel_tags) in parsed.items():
    assert wheel_tags & ACCEPTED, f'{wheel.name}: no tag that Python 3.12 on manylinux x86_64 accepts'
  # The premise: the accepted tags tell Python versions and platforms apart, and binary wheels are among these.
  assert not tags.parse_tag('cp311-cp311-manylinux_2_17_x86_64') & ACCEPTED
  assert not tags.parse_tag('cp312-cp312-macosx_11_0_arm64') & ACCEPTED
  assert any(t.platform != 'any' for *_, ts in parsed.values() for t in ts)
  assert sum(w.stat().st_size for w in wheels) + tree_bytes() < LIMIT

  pure = [w for w, (*_, ts) in parsed.items() if all(t.platform == 'any' for t in ts)]
  site = tmp_path / 'site'
  r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile',
                      '--target', str(site), *map(str, pure)], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  installed = {utils.canonicalize_name(p.name.split('-')[0]) for p in site.glob('*.dist-info')}
  assert installed == {parsed[w][0] for w in pure}


def check(tmp_path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, pathlib.Path]:
  """bench/device_check.sh run here on the CPU, with no wheels to install; returns its $OUT."""
  out = tmp_path / 'out'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHON': sys.executable, 'OUT': str(out),
         'WHEELS': str(tmp_path / 'no_wheels')}
  r = subprocess.run(['bash', str(ROOT / 'bench' / 'device_check.sh'), *args], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=timeout)
  return r, out


@pytest.mark.slow
def test_device_check_runs_on_a_cpu_within_its_limit_and_says_it_found_no_gpu(tmp_path):
  """Every part runs, each under its own limit within the whole check's, and every outcome
  is in the summary; the accelerator's quick figures come out whole (they are not tested)."""
  r, out = check(tmp_path, timeout=330)
  summary = dict(line.split(None, 1) for line in (out / 'summary.txt').read_text().splitlines())
  assert list(summary) == ['install', 'versions', 'smoke', 'accelerator'], r.stdout[-3000:]
  assert summary['install'].startswith('nothing to install: no wheels')
  versions = (out / 'versions.log').read_text()
  assert summary['versions'].startswith('ok'), versions
  assert 'NO GPU FOUND' in versions and 'NO GPU FOUND' in r.stdout
  assert 'jax 0.' in versions and 'flax 0.' in versions and 'orbax-checkpoint 0.' in versions
  smoke = (out / 'smoke.log').read_text()
  assert summary['smoke'].startswith('ok') and 'smoke: every model ok' in smoke, smoke[-3000:]
  assert '1 x cpu (cpu), jax ' in smoke
  accelerator = (out / 'accelerator.log').read_text()
  assert summary['accelerator'].startswith('ok'), accelerator[-3000:]
  for line in ('(--quick: small models', 'dense matmul peak', 'CNN train, batch 256', 'CNN grid, 16 trials',
               'CNN: resident', 'MLP: resident data per device', "the study's 8,000 images", 'all 20,000 images'):
    assert line in accelerator, (line, accelerator[-2000:])
  assert r.returncode == 0


def test_device_check_refuses_a_limit_that_is_no_number(tmp_path):
  r, out = check(tmp_path, '5min', timeout=30)
  assert r.returncode == 2 and "SECONDS must be a whole number of seconds, not '5min'" in r.stderr
  assert not out.exists()
