"""The MLP study on the real data: 24x24 RGB, ImageNet mean/std, MLP 1728-128-128-2, batch 64.

Point it at the Kaggle download with --config.dataset.manual_dir=PATH (the zip or
its folder); `mlp.py:runlocal` runs on the generated stand-in instead.
"""
import ml_collections

from configs import common
from configs import default


def experiment():
  c = default.experiment()
  c.dataset.name = 'comic_faces/rgb24'
  c.dataset.manual_dir = '~/tensorflow_datasets/downloads/manual'
  c.model = ml_collections.ConfigDict(dict(  # comicface/models/mlp.py
      name='mlp', hidden=(128, 128), input_scaling='imagenet'))
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.num_epochs = 3
  c.log_every_steps = 50
  c.speed.predict_chunk = 0    # small activations: one pass per batch
  c.speed.cpu_slice_images = 0  # no convolutions to spread over the cores
  return c


get_config = common.variants(experiment, runlocal=common.runlocal)
