"""Peer benchmark: the MLP study's PyTorch model, trained and run the way the study did.

    python torch_mlp.py --optimizer sgd|adam --batch 64 --steps 300 [--predict_batch 256]
    python torch_mlp.py --whole 3 --data data.npz      (a whole training run: epochs, each validated)

For comparison with bench/train_throughput.py only; not part of comicface. Runs in
its own venv (requirements-torch.txt), with PyTorch's default thread settings. Data
are random 24x24x3 images normalised with ImageNet mean/std beforehand, served by a
DataLoader over a TensorDataset as in the study. Prints one JSON line.
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def data(n: int, seed: int = 0) -> TensorDataset:
  """`n` random normalised images (N, 3, 24, 24) and binary labels."""
  g = torch.Generator().manual_seed(seed)
  x = torch.randint(0, 256, (n, 3, 24, 24), generator=g, dtype=torch.uint8).float() / 255
  x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
  return TensorDataset(x, torch.randint(0, 2, (n,), generator=g))


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader) -> None:
  """The study's loop: zero_grad, forward, loss, backward, step."""
  model.train()
  loss_fn = nn.CrossEntropyLoss()
  for x, y in loader:
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()


def predict(model: nn.Module, loader: DataLoader) -> None:
  """Class probabilities of every batch, without gradients."""
  model.eval()
  with torch.no_grad():
    for (x,) in loader:
      model(x).softmax(1)


def normalised(images: np.ndarray) -> torch.Tensor:
  """uint8 (N, 24, 24, 3) images as the study's transforms give them: (N, 3, 24, 24), ImageNet mean/std."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
  return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def whole_run(model: nn.Module, opt: torch.optim.Optimizer, path: str, epochs: int, batch: int) -> dict:
  """The study's training run on the arrays of `path` (x_train, y_train, x_val, y_val, uint8 images
  normalised once, in memory, before the clock starts): each epoch trains on shuffled batches, then
  validates. Images/s over the epochs after the first, as comicface's bench.end_to_end reads its runs."""
  d = np.load(path)
  train = TensorDataset(normalised(d['x_train']), torch.from_numpy(d['y_train']).long())
  val = TensorDataset(normalised(d['x_val']), torch.from_numpy(d['y_val']).long())
  ends = []
  for _ in range(epochs):
    train_epoch(model, opt, DataLoader(train, batch_size=batch, shuffle=True))
    model.eval()
    with torch.no_grad():
      right = sum(int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(val, batch_size=256))
    ends.append(time.perf_counter())
  return {'train_img_s': (epochs - 1) * len(train) / (ends[-1] - ends[0]), 'val_accuracy': right / len(val)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--optimizer', default='sgd', choices=['sgd', 'adam'])
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--steps', type=int, default=300, help='timed training batches')
  p.add_argument('--predict_batch', type=int, default=256)
  p.add_argument('--predict_steps', type=int, default=50, help='timed prediction batches')
  p.add_argument('--whole', type=int, default=0, help='epochs of a whole training run on --data instead')
  p.add_argument('--data', default='', help='--whole: an .npz of uint8 x_train, y_train, x_val, y_val')
  a = p.parse_args()
  torch.manual_seed(0)
  model = nn.Sequential(nn.Flatten(), nn.Linear(1728, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                        nn.Linear(128, 2))
  opt = (torch.optim.SGD if a.optimizer == 'sgd' else torch.optim.Adam)(model.parameters(), lr=1e-3)
  if a.whole:
    print(json.dumps({'peer': 'torch', 'model': 'mlp', 'mode': 'whole', 'epochs': a.whole, 'batch': a.batch,
                      'optimizer': a.optimizer, **whole_run(model, opt, a.data, a.whole, a.batch)}))
    return
  train = data(a.steps * a.batch)
  images = TensorDataset(data(a.predict_steps * a.predict_batch, seed=1).tensors[0])
  train_epoch(model, opt, DataLoader(data(10 * a.batch, seed=2), batch_size=a.batch, shuffle=True))  # warm-up
  predict(model, DataLoader(images, batch_size=a.predict_batch))

  start = time.perf_counter()
  train_epoch(model, opt, DataLoader(train, batch_size=a.batch, shuffle=True))
  train_s = time.perf_counter() - start
  start = time.perf_counter()
  predict(model, DataLoader(images, batch_size=a.predict_batch))
  predict_s = time.perf_counter() - start
  print(json.dumps({'peer': 'torch', 'model': 'mlp', 'batch': a.batch, 'optimizer': a.optimizer,
                    'dtype': 'float32', 'train_img_s': len(train) / train_s,
                    'predict_img_s': len(images) / predict_s}))


if __name__ == '__main__':
  main()
