"""What the project sets by itself for the machine it runs on, unless the user has, and
the check that JAX uses the machine's accelerator.

XLA flags, set on import of `comicface` (before JAX starts), each harmless where it
does not apply:
- XLA:CPU's default path for a convolution's weight gradient is several times slower
  than YNNPACK's dot and reduce fusions (its elementwise fusions, left out, halve the
  speed of the CNN with SGD or in bfloat16);
- XLA:GPU's deterministic ops (no atomics in reductions and scatters, deterministic
  cuDNN algorithms), so that a resumed run replays its epochs as they ran (see
  docs/reliability.md); `XLA_FLAGS=--xla_gpu_deterministic_ops=false` opts out.
And one setting for CPUs:
- transparent huge pages for glibc's malloc, which needs a restart of the process
  (`restart_with_huge_pages`, called first thing by main.py and the benchmarks).
"""
from __future__ import annotations

import os
import pathlib
import platform
import sys

from absl import logging

XLA_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'dot,reduce', 'xla_gpu_deterministic_ops': 'true'}
MALLOC_TUNABLES = 'glibc.malloc.hugetlb=1'


def set_xla_flags() -> None:
  """Adds each of XLA_FLAGS to $XLA_FLAGS unless the user already set that flag."""
  for flag, value in XLA_FLAGS.items():
    if flag not in os.environ.get('XLA_FLAGS', ''):
      os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} --{flag}={value}'.strip()


def restart_with_huge_pages() -> None:
  """Re-executes this program (same interpreter and arguments) with glibc's malloc
  backing large buffers by transparent huge pages, unless $GLIBC_TUNABLES is set
  (set it empty to opt out) or the C library is not glibc.

  XLA:CPU allocates each step's activations afresh (hundreds of MB for the CNN),
  and glibc maps them with 4 KiB pages: the page faults cost about a quarter of a
  training step on a 2-core CPU. Call it before any work: where it restarts, it
  does not return.
  """
  if 'GLIBC_TUNABLES' in os.environ or platform.libc_ver()[0] != 'glibc':
    return
  os.environ['GLIBC_TUNABLES'] = MALLOC_TUNABLES
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


TPU_PCI_DEVICES = ('0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076')  # v3 .. TPU7x
INSTALL = {'gpu': 'make install ACCEL=cuda13', 'tpu': 'make install ACCEL=tpu'}  # or pip install -e '.[cuda13]'


def find_accelerator(root: str = '/') -> str | None:
  """'gpu' (an NVIDIA GPU), 'tpu' (Google TPU chips on the PCI bus) or None, as JAX's
  own start-up looks for them."""
  base = pathlib.Path(root)
  if any((base / 'dev' / d).exists() for d in ('nvidia0', 'nvidiactl')):
    return 'gpu'
  for device in sorted((base / 'sys' / 'bus' / 'pci' / 'devices').glob('*')):
    try:
      vendor, kind, model = ((device / f).read_text().strip() for f in ('vendor', 'class', 'device'))
    except OSError:
      continue
    if vendor == '0x1ae0' and model in TPU_PCI_DEVICES:
      return 'tpu'
    if vendor == '0x10de' and kind.startswith('0x03'):  # a display or 3D controller
      return 'gpu'
  return None


def warn_if_accelerator_unused(root: str = '/') -> bool:
  """Warns loudly, naming the install command, where the machine has an accelerator
  but JAX runs on the CPU (a CPU-only jaxlib). Returns whether it warned."""
  import jax  # pylint: disable=g-import-not-at-top
  found = find_accelerator(root)
  if found is None or jax.default_backend() != 'cpu':
    return False
  logging.warning('%s\n  This machine has %s, but JAX sees only the CPU: this run would train on '
                  'the CPU.\n  Install the matching JAX (`%s`), then rerun.\n%s', '!' * 72,
                  'an NVIDIA GPU' if found == 'gpu' else 'TPU chips', INSTALL[found], '!' * 72)
  return True
