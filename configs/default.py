"""The CNN with the CNN study's best hyper-parameters, on the generated stand-in.

Sized to finish in a few minutes on a 2-core CPU; `default.py:runlocal` shrinks it
to seconds. Other configs import this one and change a few fields.
"""
import ml_collections

from configs import common


def experiment() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dataset = ml_collections.ConfigDict(dict(
      name='comic_faces/gray128',  # comic_faces/<builder config>, 'folder' (configs/folder.py), or a TFDS name ('cifar10')
      manual_dir='',   # the Kaggle zip or folder, or the folder of class folders; '' = generate the stand-in in the workdir
      data_dir='',     # where TFDS builds go; '' = ~/tensorflow_datasets, or the workdir for the stand-in
      max_bad_fraction=0.05,
      image_size=0,    # the side images are resized to; 0 = the dataset's own (comic_faces: its config's); 'folder' needs one
      mode='',         # 'L' (grey) or 'RGB'; '' = the dataset's own ('RGB' for a folder)
      image_key='image', label_key='label',  # a TFDS dataset's features
      split_scheme='pairs',  # comic_faces: or a study's own protocol: 'cnn_study', 'mlp_study'; any dataset: 'own'
      splits=ml_collections.ConfigDict(type_safe=False),  # 'own': TFDS split strings for train, validation and test
      validation_fraction=0.1,  # 'own': carved (stratified) from the train split where the dataset has no validation...
      test_fraction=0.1,        # ...or test split of its own
      split_seed=0,
      synthetic_pairs=700,  # the stand-in's size, when manual_dir is '' (a folder's: images per class)
      synthetic_size=256,
      synthetic_seed=0,
      synthetic_difficulty=0.0,  # 0 (the plain stand-in) to 1: faces drawn closer to comics (search tests)
      synthetic_classes=3,  # the folder stand-in's classes
  ))
  c.model = ml_collections.ConfigDict(dict(  # comicface/models/cnn.py
      name='cnn', filters_1=100, filters_2=50, dropout_rate=0.5, input_scaling='unit'))
  c.optimizer = 'adam'  # 'adam', 'adamw' or 'sgd' (comicface/optimizers.py)
  c.learning_rate = 1e-3   # the peak, where a schedule warms up to it
  c.momentum = 0.0         # sgd: momentum (0: none)
  c.nesterov = False       # sgd with momentum: Nesterov's
  c.weight_decay = 0.0     # adamw: decoupled; adam and sgd: L2 on the gradient
  c.grad_clip_norm = 0.0   # clip the gradient to this global norm (0: off)
  c.schedule = 'constant'  # 'constant', or 'cosine' / 'linear' decay to 0 at the last step
  c.warmup_epochs = 0.0    # a linear warm-up from 0 over these epochs first
  c.schedule_epochs = 0    # the epochs the schedule spans (0: num_epochs); a retrained winner takes its trial's
  c.batch_size = 32     # global, across all devices and processes
  c.num_epochs = 4
  c.augment = ''  # ops on each training batch, on the devices: 'flip_lr|random_crop(pad=4)' (comicface/augment.py)
  c.ema_decay = 0.0  # evaluate a moving average of the parameters, updated by this decay each step (0: off)
  c.grad_accum_steps = 1  # each batch in this many micro-batches, one update: a batch larger than the devices hold
  c.train_splits = ('train',)  # the splits trained on: ('train', 'validation') for both
  c.test_checkpoint = 'best'   # tested at the end: 'best' (by best_by), or 'last'
  c.best_by = 'val_accuracy'   # the best epoch (and trial): by this record, then lower val_loss, then fewer epochs
  c.seed = 0
  c.dtype = 'float32'  # computation dtype; parameters and optimizer state stay float32
  c.early_stopping = ml_collections.ConfigDict(dict(  # Keras' EarlyStopping, and its meanings
      monitor='',  # '' (off), 'val_loss', 'val_accuracy', 'train_loss' or 'train_accuracy'
      mode='auto', patience=0, min_delta=0.0, start_from_epoch=0))
  c.init = ml_collections.ConfigDict(dict(  # fine-tuning (comicface/finetune.py): where this run starts
      workdir='',  # a run's or a search's workdir: its trained parameters and model state start this run ('': fresh)
      step=0,      # its checkpoint at this step (0: the one its training tested)
      skip=(),     # regular expressions over parameter paths kept fresh: ('params/Dense_0/.*',) for a new CNN head
  ))

  # A search over config.grid (see cnn_grid.py, cnn_halving.py).
  c.grid = ml_collections.ConfigDict(type_safe=False)  # an axis: values (1e-2, 1e-3), or 'log_uniform(1e-4, 1e-1)'
  c.search = 'grid'   # 'grid', 'random' (num_trials draws), 'halving', or 'bayesian' (TPE; needs optuna)
  c.num_trials = 16   # the draws of 'random' and 'bayesian' (and of 'halving' over ranges)
  c.halving = ml_collections.ConfigDict(dict(factor=3, min_epochs=1, brackets=1))  # brackets > 1: Hyperband, each its draws
  c.bayesian_batch = 4  # trials asked of TPE at once, trained as one stack
  c.seeds = 1         # initialisations of each trial, trained in one stack on the same batches
  c.grid_parallel = 'auto'   # 'sequential', 'stacked', 'parallel' (groups side by side on sub-meshes), 'auto'
  c.shard = 'auto'  # 'i/N': this job's share of the search's trials; 'auto': from Slurm/Kubernetes/TPU VM
  c.retrain_splits = ('train',)  # the winner is retrained on these; () tests it as it was trained

  c.log_every_steps = 20
  c.keep_checkpoints = 2  # the latest N are kept, and the best by validation accuracy
  c.checkpoint_seconds = 30.0  # a checkpoint at the first epoch end this long after the last (0: every epoch)
  # How fast, not what: not part of a workdir's identity. Only `kernels` changes results: the CPU
  # kernels draw each example's dropout from a key of its own, Flax's layers one draw per batch.
  c.speed = ml_collections.ConfigDict(dict(
      kernels='auto',       # 'auto' (the model's CPU_KERNELS on CPUs, Flax's own layers elsewhere), 'xla', 'cpu'
      feed='auto',          # 'resident' (the data on the devices), 'stream' (grain from disk), 'auto': feeds.choose
      steps_per_call='auto',  # train steps per jitted call (a lax.scan), or 'auto': steps.resolve_steps_per_call
      predict_chunk=32,     # with the CPU kernels: images per forward pass in a larger prediction batch (0: all)
      cpu_slice_images=4,   # with the CPU kernels: the step runs the model on slices of this many images per device
  ), type_safe=False)  # steps_per_call: 'auto' or a number
  return c


def runlocal(c: ml_collections.ConfigDict) -> None:
  common.runlocal(c)
  c.model.filters_1, c.model.filters_2 = 8, 8


get_config = common.variants(experiment, runlocal=runlocal)
