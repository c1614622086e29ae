"""The device check runs end to end (on this machine's CPU, in its quick form); its figures are not tested."""
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_the_accelerator_check_runs_quick():
  r = subprocess.run([sys.executable, '-m', 'bench.accelerator', '--quick'], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  for line in ('dense matmul peak', 'CNN train, batch 256', 'CNN grid, 16 trials', 'CNN: resident',
               'MLP: resident', "the study's 8,000 images", 'all 20,000 images'):
    assert line in r.stdout, (line, r.stdout[-2000:])
