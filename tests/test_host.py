"""What the project sets by itself for the machine: XLA flags and malloc's huge pages."""
import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ('from comicface import host\n'
          'host.restart_with_huge_pages()\n'
          'import os\n'
          "print(repr(os.environ.get('XLA_FLAGS')), repr(os.environ.get('GLIBC_TUNABLES')),\n"
          "      b'GLIBC_TUNABLES=glibc.malloc.hugetlb=1' in open('/proc/self/environ', 'rb').read())\n")


def _run(**env) -> list[str]:
  base = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'GLIBC_TUNABLES')}
  r = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, cwd=ROOT,
                     env={**base, 'PYTHONPATH': str(ROOT), **env}, timeout=60)
  assert r.returncode == 0, r.stderr
  return r.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_restarts_once_with_huge_pages_and_the_xla_flag():
  xla, tunables, at_start = _run()
  assert 'xla_cpu_experimental_ynn_fusion_type' in xla
  assert tunables == "'glibc.malloc.hugetlb=1'" and at_start == 'True'  # glibc saw it at start


def test_user_settings_are_left_alone():
  xla, tunables, at_start = _run(XLA_FLAGS='--xla_cpu_experimental_ynn_fusion_type=dot',
                                 GLIBC_TUNABLES='')
  assert xla == "'--xla_cpu_experimental_ynn_fusion_type=dot'"
  assert tunables == "''" and at_start == 'False'
