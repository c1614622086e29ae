"""The studies' protocols give the same results as in an earlier checkout: both run each
config, and every number of their results.json is compared, bitwise (a field that only
one of them has is a difference too).

    python -m bench.same_results --baseline /tmp/base [--configs repro_cnn_study,repro_mlp_study] [--variant runlocal]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def results(tree: pathlib.Path, config: str, variant: str) -> dict:
  workdir = pathlib.Path(tempfile.mkdtemp(prefix=f'same_{config}_'))
  r = subprocess.run([sys.executable, 'main.py', f'--config=configs/{config}.py:{variant}', f'--workdir={workdir}'],
                     cwd=tree, capture_output=True, text=True)
  if r.returncode:
    raise RuntimeError(f'{config} in {tree} failed:\n{r.stderr[-3000:]}')
  return json.loads((workdir / 'results.json').read_text())


def differences(a, b, path='', sides=('this checkout', 'the baseline')) -> list[str]:
  """Where two results differ: in a value, or in a field that only one side (`sides`: their names) has."""
  if isinstance(a, dict) and isinstance(b, dict):
    alone = [f'{path}.{k}: only in {side}' for side, keys in zip(sides, (a.keys() - b.keys(), b.keys() - a.keys()))
             for k in sorted(keys)]
    return alone + [d for k in sorted(a.keys() & b.keys()) if k != 'config'
                    for d in differences(a[k], b[k], f'{path}.{k}', sides)]
  if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{path}[{i}]', sides)]
  return [] if a == b else [f'{path}: {a!r} / {b!r}']


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--baseline', type=pathlib.Path, required=True, help='an earlier checkout of the project')
  p.add_argument('--configs', default='repro_cnn_study,repro_mlp_study')
  p.add_argument('--variant', default='runlocal')
  a = p.parse_args()
  for config in a.configs.split(','):
    new, old = results(ROOT, config, a.variant), results(a.baseline.resolve(), config, a.variant)
    diff = differences(new, old)
    print(f'{config}:{a.variant}: {"the same" if not diff else f"{len(diff)} differences"}; winner '
          f'{new.get("winner")}, test accuracy {new["test_accuracy"]:.4f} / {old["test_accuracy"]:.4f}, '
          f'test loss {new["test_loss"]!r} / {old["test_loss"]!r}', flush=True)
    for d in diff[:10]:
      print('  ', d)


if __name__ == '__main__':
  main()
