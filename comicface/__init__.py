"""comicface: tell real face photos from comic drawings of the same faces."""
import os

# XLA:CPU's default path for a convolution's weight gradient is several times
# slower than this fusion path. Set before JAX starts, unless the user chose.
_CPU_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce'
if 'xla_cpu_experimental_ynn_fusion_type' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _CPU_FLAGS).strip()
