"""comicface against the studies' own code, alternately (A B A B ...), median of N pairs.

    python -m bench.compare [--pairs 3] [--steps 20] [--grid]     (or: make bench)
    python -m bench.compare --pairs 0 --grid                       (the grid alone)
    python -m bench.compare --baseline /tmp/base                    (also an earlier checkout: before/after)

The peers (bench/peers/: Keras for the CNN study, PyTorch for the MLP study) run in
their own venvs under ~/.cache/comicface-bench/, made on first use from
bench/peers/requirements-*.txt, apart from the project's requirements.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEERS = ROOT / 'bench' / 'peers'
CACHE = pathlib.Path(os.environ.get('COMICFACE_BENCH_CACHE', '~/.cache/comicface-bench')).expanduser()


def peer_python(name: str) -> str:
  """The python of the peer's venv, created on first use and installed from its
  requirements whenever they change."""
  venv = CACHE / name
  python = venv / 'bin' / 'python'
  wanted = (PEERS / f'requirements-{name}.txt').read_text()
  installed = venv / 'installed-requirements.txt'
  if not python.exists():
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
  if not installed.exists() or installed.read_text() != wanted:
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', '-r', str(PEERS / f'requirements-{name}.txt')],
                   check=True)
    installed.write_text(wanted)
  return str(python)


def run_json(cmd: list[str], cwd: pathlib.Path = ROOT) -> dict:
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
  if out.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def project(*args: str) -> list[str]:
  return [sys.executable, '-m', 'bench.train_throughput', '--json', *args]


def cases(steps: int) -> list[tuple[str, list[str], list[str], str]]:
  """(label, project command, peer command, metric)."""
  keras = [peer_python('keras'), str(PEERS / 'keras_cnn.py')]
  torch = [peer_python('torch'), str(PEERS / 'torch_mlp.py')]
  s = str(steps)
  return [
      ('CNN train, float32, batch 32', project('--model=cnn', '--batch=32', f'--steps={s}'),
       keras + ['--batch=32', f'--steps={s}'], 'train_img_s'),
      ('CNN train, float32, batch 64', project('--model=cnn', '--batch=64', f'--steps={s}'),
       keras + ['--batch=64', f'--steps={s}'], 'train_img_s'),
      ('CNN train, bfloat16 mixed, batch 32', project('--model=cnn', '--batch=32', '--dtype=bfloat16', f'--steps={s}'),
       keras + ['--batch=32', '--mixed_bfloat16', f'--steps={s}'], 'train_img_s'),
      ('CNN predict, float32, batch 256', project('--model=cnn', '--batch=32', f'--steps={s}'),
       keras + ['--batch=32', f'--steps={s}'], 'predict_img_s'),
      ('MLP train, SGD, batch 64', project('--model=mlp', '--optimizer=sgd', '--steps=300'),
       torch + ['--optimizer=sgd', '--steps=300'], 'train_img_s'),
      ('MLP train, Adam, batch 64', project('--model=mlp', '--optimizer=adam', '--steps=300'),
       torch + ['--optimizer=adam', '--steps=300'], 'train_img_s'),
      ('MLP predict, batch 256', project('--model=mlp', '--steps=300'),
       torch + ['--optimizer=adam', '--steps=300'], 'predict_img_s'),
  ]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=3)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--grid', action='store_true', help='also the reduced CNN grid (slow)')
  p.add_argument('--baseline', type=pathlib.Path, default=None,
                 help='an earlier checkout of the project, run alternately with this one')
  a = p.parse_args()
  trees = {'project': ROOT, **({'baseline': a.baseline.resolve()} if a.baseline else {})}
  head = ''.join(f' {name:>10}' for name in trees)
  print(f'{"what":<38}{head} {"peer":>10} {"ratio":>7}{"  after/before" if a.baseline else ""}', flush=True)
  for label, ours, theirs, metric in cases(a.steps) if a.pairs else ():
    figures = {name: [] for name in [*trees, 'peer']}
    for _ in range(a.pairs):  # alternately: project, baseline, peer, project, ...
      for name, tree in trees.items():
        figures[name].append(run_json(ours, cwd=tree)[metric])
      figures['peer'].append(run_json(theirs)[metric])
    m = {name: statistics.median(v) for name, v in figures.items()}
    row = ''.join(f' {m[name]:>10.1f}' for name in trees)
    change = f' {m["project"] / m["baseline"]:>12.2f}x' if a.baseline else ''
    print(f'{label:<38}{row} {m["peer"]:>10.1f} {m["project"] / m["peer"]:>6.2f}x{change}', flush=True)
  if a.grid:
    seconds = {name: run_json([sys.executable, '-m', 'bench.grid_time', '--pairs=730', '--json'], cwd=tree)
               for name, tree in trees.items()}
    n = seconds['project']['images']  # the peer trains on as many images as the stand-in's train split holds
    peer = run_json([peer_python('keras'), str(PEERS / 'keras_cnn.py'), '--grid', f'--images={n}'])
    row = ''.join(f' {seconds[name]["seconds"]:>10.1f}' for name in trees)
    change = (f' {seconds["baseline"]["seconds"] / seconds["project"]["seconds"]:>12.2f}x' if a.baseline else '')
    print(f'{f"CNN grid, 16 trials x 1 epoch, {n} img (s)":<38}{row} {peer["seconds"]:>10.1f} '
          f'{peer["seconds"] / seconds["project"]["seconds"]:>6.2f}x{change}', flush=True)
  if a.pairs:
    print(f'(images/s; ratio = project / peer, after/before = project / baseline (for the grid, time '
          f'before / after); median of {a.pairs} alternating rounds)')


if __name__ == '__main__':
  main()
