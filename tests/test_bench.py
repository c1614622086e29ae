"""The benchmarks' own logic (bench.accelerator runs end to end in tests/test_device_scripts.py)."""


def test_same_results_names_the_fields_that_only_one_side_has():
  from bench import same_results  # pylint: disable=g-import-not-at-top
  new = {'test_accuracy': 0.5, 'tested_step': 8, 'history': [{'epoch': 1, 'val_brier': 0.2}], 'config': {'a': 1}}
  old = {'test_accuracy': 0.5, 'best_step': 8, 'history': [{'epoch': 1}], 'config': {'b': 2}}
  assert same_results.differences(new, old) == [
      '.tested_step: only in this checkout', '.best_step: only in the baseline',
      '.history[0].val_brier: only in this checkout']
  assert same_results.differences(new, new) == []
