"""The CNN with the CNN study's best hyper-parameters, on the generated stand-in.

Sized to finish in a few minutes on a 2-core CPU. Variants: `default.py:runlocal`
shrinks it further. Other configs import this one and override a few fields.
"""
import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """`arg`: comma-separated variants; 'runlocal' makes a run of seconds."""
  c = ml_collections.ConfigDict()
  c.dataset = ml_collections.ConfigDict(dict(
      name='comic_faces/gray128',  # comic_faces/<builder config>
      manual_dir='',   # the Kaggle zip or folder; '' = generate the stand-in in the workdir
      data_dir='',     # where TFDS builds go; '' = ~/tensorflow_datasets, or the workdir for the stand-in
      max_bad_fraction=0.05,
      split_scheme='pairs',  # or a study's own protocol: 'cnn_study', 'mlp_study'
      synthetic_pairs=700,  # the stand-in's size, when manual_dir is ''
      synthetic_size=256,
      synthetic_seed=0,
  ))
  c.model = ml_collections.ConfigDict(dict(
      name='cnn', filters_1=100, filters_2=50, dropout_rate=0.5, input_scaling='unit'))
  c.dtype = 'float32'  # computation dtype; parameters and optimizer state stay float32
  c.optimizer = 'adam'  # 'adam' or 'sgd'
  c.augment_hflip = False  # mirror a random half of each training batch
  c.learning_rate = 1e-3
  c.batch_size = 32     # global, across all devices and processes
  c.train_splits = ('train',)  # ('train', 'validation') to retrain on both
  c.test_checkpoint = 'best'   # tested at the end: 'best' by validation accuracy, or 'last'
  c.num_epochs = 4
  c.seed = 0
  c.log_every_steps = 20
  c.steps_per_call = 1  # train steps per jitted call (a lax.scan): >1 only for models with short steps
  c.predict_chunk = 32  # images per forward pass in a larger prediction batch (0: all at once)
  c.cpu_slice_images = 4  # on CPUs, CNN convolutions run on slices of this many images per device (0: off)
  c.grid = ml_collections.ConfigDict()  # e.g. grid.learning_rate = (1e-2, 1e-3): see cnn_grid.py
  c.grid_parallel = 'auto'   # 'stacked', 'sequential', or 'auto' (by device count)
  c.retrain_splits = ('train',)  # the grid's winner is retrained on these
  c.keep_checkpoints = 2  # the latest N are kept, and the best by validation accuracy
  return apply_variants(c, arg)


def apply_variants(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Applies the comma-separated variants in `arg` to any config."""
  for variant in filter(None, (arg or '').split(',')):
    if variant == 'runlocal':
      c.dataset.synthetic_pairs = 96
      c.dataset.synthetic_size = 128
      c.num_epochs = 2
      c.batch_size = 16
      c.log_every_steps = 5
      if c.model.name == 'cnn':
        c.model.filters_1, c.model.filters_2 = 8, 8
    else:
      raise ValueError(f"unknown config variant {variant!r}; known: 'runlocal'")
  return c
