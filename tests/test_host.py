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
          "      b'GLIBC_TUNABLES=glibc.malloc.hugetlb=1' in open('/proc/self/environ', 'rb').read(), sep='\\n')\n")


def _run(**env) -> list[str]:
  base = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'GLIBC_TUNABLES')}
  r = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, cwd=ROOT,
                     env={**base, 'PYTHONPATH': str(ROOT), **env}, timeout=60)
  assert r.returncode == 0, r.stderr
  return r.stdout.splitlines()


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_restarts_once_with_huge_pages_and_the_xla_flag():
  xla, tunables, at_start = _run()
  assert '--xla_cpu_experimental_ynn_fusion_type=dot,reduce' in xla and '--xla_gpu_deterministic_ops=true' in xla
  assert tunables == "'glibc.malloc.hugetlb=1'" and at_start == 'True'  # glibc saw it at start


def test_user_settings_are_left_alone():
  xla, tunables, at_start = _run(XLA_FLAGS='--xla_cpu_experimental_ynn_fusion_type=dot '
                                           '--xla_gpu_deterministic_ops=false', GLIBC_TUNABLES='')
  assert xla == "'--xla_cpu_experimental_ynn_fusion_type=dot --xla_gpu_deterministic_ops=false'"
  assert tunables == "''" and at_start == 'False'


@pytest.mark.parametrize('fake, found', [
    ({'dev/nvidia0': ''}, 'gpu'),
    ({'sys/bus/pci/devices/0000:00:05.0/vendor': '0x10de', 'sys/bus/pci/devices/0000:00:05.0/class': '0x030200',
      'sys/bus/pci/devices/0000:00:05.0/device': '0x2330'}, 'gpu'),
    ({'sys/bus/pci/devices/0000:00:04.0/vendor': '0x1ae0', 'sys/bus/pci/devices/0000:00:04.0/class': '0x120000',
      'sys/bus/pci/devices/0000:00:04.0/device': '0x0063'}, 'tpu'),
    ({'sys/bus/pci/devices/0000:00:01.0/vendor': '0x1af4', 'sys/bus/pci/devices/0000:00:01.0/class': '0x020000',
      'sys/bus/pci/devices/0000:00:01.0/device': '0x1000'}, None),
], ids=['nvidia_device_file', 'nvidia_pci', 'tpu_v5e_pci', 'network_card'])
def test_accelerator_unused_by_jax_is_named_with_its_install(tmp_path, caplog, fake, found):
  """On a (faked) machine with an accelerator, JAX on the CPU warns, naming the install."""
  import jax  # pylint: disable=g-import-not-at-top
  from comicface import host  # pylint: disable=g-import-not-at-top
  for name, text in fake.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text + '\n')
  assert jax.default_backend() == 'cpu'
  caplog.set_level('WARNING')
  assert host.find_accelerator(str(tmp_path)) == found
  assert host.warn_if_accelerator_unused(str(tmp_path)) == (found is not None)
  if found:
    assert f'make install ACCEL={"cuda13" if found == "gpu" else "tpu"}' in caplog.text
    assert 'JAX sees only the CPU' in caplog.text
  else:
    assert not caplog.text
