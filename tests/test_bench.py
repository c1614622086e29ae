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


def test_same_results_names_the_fields_that_only_one_side_has():
  from bench import same_results  # pylint: disable=g-import-not-at-top
  new = {'test_accuracy': 0.5, 'tested_step': 8, 'history': [{'epoch': 1, 'val_brier': 0.2}], 'config': {'a': 1}}
  old = {'test_accuracy': 0.5, 'best_step': 8, 'history': [{'epoch': 1}], 'config': {'b': 2}}
  assert same_results.differences(new, old) == [
      '.tested_step: only in this checkout', '.best_step: only in the baseline',
      '.history[0].val_brier: only in this checkout']
  assert same_results.differences(new, new) == []
