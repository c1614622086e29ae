"""The MLP study on the real data: 24x24 RGB, ImageNet mean/std, MLP 1728-128-128-2, batch 64.

Point it at the Kaggle download with --config.dataset.manual_dir=PATH (the zip or
its folder); `mlp.py:runlocal` runs on the generated stand-in instead.
"""
import ml_collections

from configs import default


def get_config(arg: str = ''):
  c = default.get_config()
  c.dataset.name = 'comic_faces/rgb24'
  c.dataset.manual_dir = '~/tensorflow_datasets/downloads/manual'
  c.model = ml_collections.ConfigDict(dict(name='mlp', hidden=(128, 128), input_scaling='imagenet'))
  c.learning_rate = 1e-3
  c.batch_size = 64
  c.num_epochs = 3
  c.log_every_steps = 50
  c.steps_per_call = 32  # a step takes about a millisecond: dispatch would dominate
  c.predict_chunk = 0  # small activations: one pass per batch
  if 'runlocal' in (arg or ''):
    c.dataset.manual_dir = ''
  return default.apply_variants(c, arg)
