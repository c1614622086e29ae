"""comicface against the studies' own code, alternately (A B A B ...), median of N pairs.

    python -m bench.compare [--pairs 3] [--steps 20] [--grid]     (or: make bench)
    python -m bench.compare --pairs 0 --grid                       (the grid alone)

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
  """The python of the peer's venv, created and installed on first use."""
  venv = CACHE / name
  python = venv / 'bin' / 'python'
  if not python.exists():
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    subprocess.run([str(python), '-m', 'pip', 'install', '-q', '-r',
                    str(PEERS / f'requirements-{name}.txt')], check=True)
  return str(python)


def run_json(cmd: list[str]) -> dict:
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
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
  a = p.parse_args()
  print(f'{"what":<38} {"project":>10} {"peer":>10} {"ratio":>7}', flush=True)
  for label, ours, theirs, metric in cases(a.steps) if a.pairs else ():
    mine, peer = [], []
    for _ in range(a.pairs):
      mine.append(run_json(ours)[metric])
      peer.append(run_json(theirs)[metric])
    m, q = statistics.median(mine), statistics.median(peer)
    print(f'{label:<38} {m:>10.1f} {q:>10.1f} {m / q:>6.2f}x', flush=True)
  if a.grid:
    ours = run_json([sys.executable, '-m', 'bench.grid_time', '--pairs=730', '--json'])
    n = ours['images']  # the peer trains on as many images as the stand-in's train split holds
    peer = run_json([peer_python('keras'), str(PEERS / 'keras_cnn.py'), '--grid', f'--images={n}'])
    print(f'{f"CNN grid, 16 trials x 1 epoch, {n} img (s)":<38} {ours["seconds"]:>10.1f} '
          f'{peer["seconds"]:>10.1f} {peer["seconds"] / ours["seconds"]:>6.2f}x', flush=True)
  if a.pairs:
    print(f'(images/s; ratio = project / peer; median of {a.pairs} alternating pairs)')


if __name__ == '__main__':
  main()
