"""Where the CNN train step's time goes: each convolution's forward pass, weight
gradient and input gradient, timed alone at the study's shapes.

    python -m bench.conv_profile [--batch 32] [--dtype float32]
"""
import argparse
import time

from comicface import host  # XLA flags for CPUs, before JAX starts
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np


def ms(f, *args, n: int = 10) -> float:
  jax.block_until_ready(f(*args))
  start = time.perf_counter()
  for _ in range(n):
    out = f(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / n * 1e3


def conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  a = p.parse_args()
  rng = np.random.default_rng(0)
  dt = jnp.dtype(a.dtype)
  shapes = {'conv1 (128x128x1 -> 100)': ((a.batch, 128, 128, 1), (3, 3, 1, 100)),
            'conv2 (63x63x100 -> 50)': ((a.batch, 63, 63, 100), (3, 3, 100, 50))}
  print(f'{"batch " + str(a.batch) + ", " + a.dtype:<28} {"forward":>9} {"dW":>9} {"dX":>9}   GFLOP/s (fwd)')
  for name, (xs, ws) in shapes.items():
    x = jnp.asarray(rng.random(xs), dt)
    w = jnp.asarray(rng.random(ws) * 0.05, dt)
    fwd = ms(jax.jit(conv), x, w)
    dw = ms(jax.jit(jax.grad(lambda w, x: conv(x, w).astype(jnp.float32).sum())), w, x)
    dx = ms(jax.jit(jax.grad(lambda x, w: conv(x, w).astype(jnp.float32).sum())), x, w)
    out = (xs[1] - 2) * (xs[2] - 2) * xs[0]
    flops = 2 * out * ws[0] * ws[1] * ws[2] * ws[3]
    print(f'{name:<28} {fwd:8.1f}ms {dw:8.1f}ms {dx:8.1f}ms   {flops / fwd / 1e6:6.1f}', flush=True)


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
