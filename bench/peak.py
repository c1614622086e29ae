"""This machine's peak matrix-multiply rate, and the fraction of it the CNN train step reaches.

    python -m bench.peak [--n 4096] [--batch 32]

Peak: a large square `jnp.dot` in float32 and bfloat16. Step FLOPs: XLA's own cost
analysis of the compiled train step (convolutions, dense layers, their gradients).
First it prints which of the CPU's bfloat16 matrix features the OS exposes: without
AMX, bfloat16 has no faster matrix unit to use than float32 has.
"""
import argparse
import pathlib
import time

from comicface import host  # XLA flags for CPUs, before JAX starts
import jax
import jax.numpy as jnp
import numpy as np

from bench.train_throughput import config_for, random_block, rate, setup, trainer


def dot_gflops(n: int, dtype) -> float:
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  start, reps = time.perf_counter(), 5
  for _ in range(reps):
    out = f(a)
  jax.block_until_ready(out)
  return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def cpu_matrix_features() -> str:
  """The bfloat16-related flags of /proc/cpuinfo (Linux), or why there are none."""
  cpuinfo = pathlib.Path('/proc/cpuinfo')
  if not cpuinfo.exists():
    return 'unknown (no /proc/cpuinfo)'
  flags = next((l.split(':', 1)[1].split() for l in cpuinfo.read_text().splitlines()
                if l.startswith('flags')), [])
  wanted = ('avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')
  return ', '.join(f'{f} {"yes" if f in flags else "no"}' for f in wanted)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--n', type=int, default=4096)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--steps', type=int, default=10)
  a = p.parse_args()
  if jax.default_backend() == 'cpu':
    print(f'CPU: {cpu_matrix_features()}', flush=True)
  for dtype in ('float32', 'bfloat16'):
    peak = dot_gflops(a.n, jnp.dtype(dtype))
    config = config_for('cnn', a.batch, dtype, 'adam')
    steps, state, hparams = setup(config)
    batch = random_block(steps, config)  # one step per call (the CNN config's steps_per_call)
    flops = steps.train.lower(state, hparams, batch, steps.put_sums(1)).compile().cost_analysis()['flops']
    img_s = rate(trainer(steps, state, hparams, batch), a.steps, a.batch)
    achieved = flops * img_s / a.batch / 1e9
    print(f'{dtype:<9} peak {peak:7.1f} GFLOP/s; CNN train step {flops / 1e9:6.2f} GFLOP per batch of '
          f'{a.batch}, {img_s:6.1f} img/s = {achieved:6.1f} GFLOP/s = {achieved / peak:5.1%} of peak',
          flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
