"""A small ResNet with batch normalisation (comicface/models/resnet.py), a model the
studies did not have, on the CNN study's data: 128x128 grey, pixels / 255, Adam.

This file and the model's are all that adding it took.
"""
import ml_collections

from configs import common
from configs import default


def experiment():
  c = default.experiment()
  c.model = ml_collections.ConfigDict(dict(
      name='resnet', widths=(16, 32, 64), blocks_per_stage=1, input_scaling='unit'))
  return c


def runlocal(c):
  common.runlocal(c)
  c.model.widths = (8, 16)


get_config = common.variants(experiment, runlocal=runlocal)
