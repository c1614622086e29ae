"""A small ResNet with batch normalisation (comicface/models/resnet.py), a model the
studies did not have, on the CNN study's data (128x128 grey, pixels / 255), trained as a
ResNet is: AdamW with decoupled weight decay, a linear warm-up, then cosine decay.

This file and the model's are all that adding it took.
"""
import ml_collections

from configs import common
from configs import default


def experiment():
  c = default.experiment()
  c.model = ml_collections.ConfigDict(dict(
      name='resnet', widths=(16, 32, 64), blocks_per_stage=1, input_scaling='unit'))
  c.optimizer, c.learning_rate, c.weight_decay = 'adamw', 1e-3, 0.05
  c.schedule, c.warmup_epochs = 'cosine', 1.0
  return c


def runlocal(c):
  common.runlocal(c)
  c.model.widths = (8, 16)


get_config = common.variants(experiment, runlocal=runlocal)
