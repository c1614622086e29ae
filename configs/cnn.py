"""The CNN study on the real data: 128x128 grayscale, pixels / 255, Adam, batch 32.

Point it at the Kaggle download with --config.dataset.manual_dir=PATH (the zip or
its folder); `cnn.py:runlocal` runs on the generated stand-in instead.
"""
from configs import common
from configs import default


def experiment():
  c = default.experiment()
  c.dataset.manual_dir = '~/tensorflow_datasets/downloads/manual'
  c.num_epochs = 10
  c.log_every_steps = 50
  return c


get_config = common.variants(experiment, runlocal=default.runlocal)
