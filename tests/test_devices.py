"""Runs the tests of tests/devices/ in a fresh Python with several CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before JAX starts)."""
import json
import os
import subprocess
import sys

import pytest

from comicface import search
from conftest import ROOT
from devices.test_sub_meshes import sixteen_trials


@pytest.fixture(scope='module')
def sequential_results(tmp_path_factory) -> str:
  """The 16 trials of tests/devices/test_sub_meshes.py one after another, on one device."""
  folder = tmp_path_factory.mktemp('sequential')
  path = folder / 'results.json'
  path.write_text(json.dumps(search.run(sixteen_trials('sequential'), str(folder / 'search'))))
  return str(path)


@pytest.mark.slow
def test_the_device_tests_pass_on_several_cpu_devices(sequential_results):
  """All of tests/devices on 8 CPU devices (the sub-meshes: 4 groups of 2)."""
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'COMICFACE_SEQUENTIAL_RESULTS': sequential_results}
  r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', str(ROOT / 'tests' / 'devices')],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
  assert ' passed' in r.stdout and 'skipped' not in r.stdout.splitlines()[-1], r.stdout[-2000:]
