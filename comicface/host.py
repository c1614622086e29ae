"""What the project sets by itself for the machine it runs on, unless the user has.

Both settings target CPUs and are harmless elsewhere:
- an XLA flag, set on import of `comicface` (before JAX starts): XLA:CPU's default
  path for a convolution's weight gradient is several times slower than YNNPACK's
  dot and reduce fusions (its elementwise fusions, left out, halve the speed of
  the CNN with SGD or in bfloat16);
- transparent huge pages for glibc's malloc, which needs a restart of the process
  (`restart_with_huge_pages`, called first thing by main.py and the benchmarks).
"""
from __future__ import annotations

import os
import platform
import sys

XLA_CPU_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'
MALLOC_TUNABLES = 'glibc.malloc.hugetlb=1'


def set_xla_flags() -> None:
  """Adds XLA_CPU_FLAGS to $XLA_FLAGS unless the user already set that flag."""
  if 'xla_cpu_experimental_ynn_fusion_type' not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + XLA_CPU_FLAGS).strip()


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
