"""Peer benchmark: the CNN study's Keras model, trained and run the way the study did.

    python keras_cnn.py --batch 32 --steps 30 [--mixed_bfloat16] [--predict_batch 256]
    python keras_cnn.py --grid [--images 1024] [--mixed_bfloat16]
    python keras_cnn.py --whole 3 --data data.npz      (a whole training run: model.fit with validation)

For comparison with bench/train_throughput.py only; not part of comicface. Runs in
its own venv (requirements-keras.txt). Data are random uint8 images scaled /255 in
numpy beforehand, as the study's in-memory arrays were. Prints one JSON line.
"""
import argparse
import itertools
import json
import os
import time

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')  # the study's Keras ran on TensorFlow

import keras  # noqa: E402
import numpy as np  # noqa: E402

SHAPE = (128, 128, 1)


def build(filters_1: int = 100, filters_2: int = 50, dropout: float = 0.5, lr: float = 1e-3) -> keras.Model:
  """The study's CNN, compiled with Adam and sparse categorical cross-entropy."""
  model = keras.Sequential([
      keras.Input(SHAPE),
      keras.layers.Conv2D(filters_1, 3, activation='relu', padding='valid'),
      keras.layers.MaxPooling2D(2),
      keras.layers.Conv2D(filters_2, 3, activation='relu', padding='valid'),
      keras.layers.MaxPooling2D(2),
      keras.layers.Flatten(),
      keras.layers.Dropout(dropout),
      keras.layers.Dense(2, activation='softmax', dtype='float32'),  # float32 under mixed precision
  ])
  model.compile(optimizer=keras.optimizers.Adam(lr), loss='sparse_categorical_crossentropy',
                metrics=['accuracy'])
  return model


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`n` random images in [0, 1] (uint8 / 255) and binary labels."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8).astype(np.float32) / 255
  return x, rng.integers(0, 2, n).astype(np.int32)


def throughput(batch: int, steps: int, predict_batch: int, predict_steps: int) -> dict[str, float]:
  """Images/s of `model.fit` (one epoch of `steps` batches) and of `model.predict`."""
  model = build()
  x, y = data(steps * batch)
  xp = data(predict_batch * predict_steps, seed=1)[0]
  model.fit(x[:3 * batch], y[:3 * batch], batch_size=batch, epochs=1, verbose=0)  # build the train graph
  model.predict(xp[:predict_batch], batch_size=predict_batch, verbose=0)  # and the predict graph
  start = time.perf_counter()
  model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
  train_s = time.perf_counter() - start
  start = time.perf_counter()
  model.predict(xp, batch_size=predict_batch, verbose=0)
  predict_s = time.perf_counter() - start
  return {'train_img_s': len(x) / train_s, 'predict_img_s': len(xp) / predict_s}


def grid(images: int) -> float:
  """Wall seconds of the study's 16 trials, one after another, each a fresh model fit 1 epoch at batch 32."""
  x, y = data(images)
  start = time.perf_counter()
  for f1, f2, dropout, lr in itertools.product((100, 200), (25, 50), (0.5, 0.7), (1e-2, 1e-3)):
    build(f1, f2, dropout, lr).fit(x, y, batch_size=32, epochs=1, verbose=0)
  return time.perf_counter() - start


class EpochEnds(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.ends = []

  def on_epoch_end(self, epoch, logs=None):
    self.ends.append(time.perf_counter())


def whole_run(path: str, epochs: int, batch: int) -> dict[str, float]:
  """The study's training run on the arrays of `path` (uint8 images / 255 in numpy, as its
  in-memory arrays were): `model.fit` with validation data. Images/s over the epochs after
  the first, as comicface's bench.end_to_end reads its runs."""
  d = np.load(path)
  scaled = lambda x: x.astype(np.float32) / 255
  clock = EpochEnds()
  history = build().fit(scaled(d['x_train']), d['y_train'], batch_size=batch, epochs=epochs, verbose=0,
                        validation_data=(scaled(d['x_val']), d['y_val']), callbacks=[clock])
  return {'train_img_s': (epochs - 1) * len(d['y_train']) / (clock.ends[-1] - clock.ends[0]),
          'val_accuracy': history.history['val_accuracy'][-1]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--steps', type=int, default=30, help='timed training batches')
  p.add_argument('--predict_batch', type=int, default=256)
  p.add_argument('--predict_steps', type=int, default=4, help='timed prediction batches')
  p.add_argument('--mixed_bfloat16', action='store_true', help="Keras' mixed_bfloat16 policy")
  p.add_argument('--grid', action='store_true', help="time the study's 16-trial grid instead")
  p.add_argument('--images', type=int, default=1024, help='images per grid trial')
  p.add_argument('--whole', type=int, default=0, help='epochs of a whole training run on --data instead')
  p.add_argument('--data', default='', help='--whole: an .npz of uint8 x_train, y_train, x_val, y_val')
  a = p.parse_args()
  if a.mixed_bfloat16:
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
  dtype = 'bfloat16' if a.mixed_bfloat16 else 'float32'
  if a.whole:
    out = {'peer': 'keras', 'model': 'cnn', 'mode': 'whole', 'epochs': a.whole, 'batch': a.batch, 'dtype': dtype,
           **whole_run(a.data, a.whole, a.batch)}
  elif a.grid:
    out = {'peer': 'keras', 'mode': 'grid', 'dtype': dtype, 'trials': 16, 'images': a.images,
           'seconds': grid(a.images)}
  else:
    out = {'peer': 'keras', 'model': 'cnn', 'batch': a.batch, 'dtype': dtype,
           **throughput(a.batch, a.steps, a.predict_batch, a.predict_steps)}
  print(json.dumps(out))


if __name__ == '__main__':
  main()
