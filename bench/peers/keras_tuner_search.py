"""Peer benchmark: keras-tuner (the CNN study's tool) searching the study's own space.

    python keras_tuner_search.py --data DATA.npz --tuner grid|hyperband [--max_epochs 10] [--factor 3]

For comparison with bench/search_time.py only; not part of comicface. Runs in the Keras
venv (requirements-keras.txt). DATA.npz holds the images and labels of the train,
validation and test splits (uint8, as comicface trains on them); they are scaled /255
in numpy, as the study did. The space: filters_1 {100, 200} x filters_2 {25, 50} x
dropout {0.5, 0.7} x learning rate {1e-2, 1e-3}, the study's CNN (keras_cnn.build), batch
32. GridSearch trains every combination for max_epochs; Hyperband(max_epochs, factor,
one iteration) promotes trials by reloading their weights. The winner is the tuner's own
best model (its best epoch's weights), tested once. Prints one JSON line.
"""
import argparse
import json
import os
import tempfile
import time

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

from keras_cnn import build  # noqa: E402


def hypermodel(hp: keras_tuner.HyperParameters):
  return build(hp.Choice('filters_1', [100, 200]), hp.Choice('filters_2', [25, 50]),
               hp.Choice('dropout', [0.5, 0.7]), hp.Choice('learning_rate', [1e-2, 1e-3]))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--data', required=True)
  p.add_argument('--tuner', choices=['grid', 'hyperband'], required=True)
  p.add_argument('--max_epochs', type=int, default=10)
  p.add_argument('--factor', type=int, default=3)
  a = p.parse_args()
  d = np.load(a.data)
  x, y = (d['x_train'] / 255.0).astype(np.float32), d['y_train']
  val = ((d['x_val'] / 255.0).astype(np.float32), d['y_val'])
  common = dict(objective='val_accuracy', seed=0, directory=tempfile.mkdtemp(), project_name=a.tuner)
  if a.tuner == 'grid':
    tuner = keras_tuner.GridSearch(hypermodel, max_trials=16, **common)
    fit = dict(epochs=a.max_epochs)
  else:
    tuner = keras_tuner.Hyperband(hypermodel, max_epochs=a.max_epochs, factor=a.factor, hyperband_iterations=1,
                                  **common)
    fit = {}
  start = time.perf_counter()
  tuner.search(x, y, batch_size=32, validation_data=val, verbose=0, **fit)
  best = tuner.get_best_models(1)[0]
  seconds = time.perf_counter() - start
  trials = tuner.oracle.trials.values()
  epochs = sum(t.hyperparameters.values.get('tuner/epochs', a.max_epochs)
               - t.hyperparameters.values.get('tuner/initial_epoch', 0) for t in trials)
  _, test_accuracy = best.evaluate((d['x_test'] / 255.0).astype(np.float32), d['y_test'], verbose=0)
  winner = tuner.get_best_hyperparameters(1)[0].values
  print(json.dumps({'peer': 'keras-tuner', 'tuner': a.tuner, 'seconds': seconds, 'trials': len(trials),
                    'trial_epochs': int(epochs), 'test_accuracy': float(test_accuracy), 'num_test': int(len(d['y_test'])),
                    'winner': {k: v for k, v in winner.items() if not k.startswith('tuner/')}}))


if __name__ == '__main__':
  main()
