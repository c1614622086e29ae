"""The CNN study on the real data: 128x128 grayscale, pixels / 255, Adam, batch 32.

Point it at the Kaggle download with --config.dataset.manual_dir=PATH (the zip or
its folder); `cnn.py:runlocal` runs on the generated stand-in instead.
"""
from configs import default


def get_config(arg: str = ''):
  c = default.get_config()
  c.dataset.manual_dir = '~/tensorflow_datasets/downloads/manual'
  c.num_epochs = 10
  c.log_every_steps = 50
  if 'runlocal' in (arg or ''):
    c.dataset.manual_dir = ''
  return default.apply_variants(c, arg)
