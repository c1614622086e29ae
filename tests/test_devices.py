"""Runs the tests of tests/devices/ in a fresh Python with several CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before JAX starts)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
@pytest.mark.parametrize('devices', [4])
def test_the_device_tests_pass_on_several_cpu_devices(devices):
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}'}
  r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', str(ROOT / 'tests' / 'devices')],
                     capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
  assert ' passed' in r.stdout and 'skipped' not in r.stdout.splitlines()[-1], r.stdout[-2000:]
