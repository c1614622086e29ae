"""Images/s the input pipeline delivers (grain over the array_record build), against
what the train step consumes.

    python -m bench.input_throughput [--pairs 500] [--config gray128] [--batch 32]
"""
import argparse
import json
import pathlib
import tempfile
import time

from comicface import host  # XLA flags for CPUs, before JAX starts

from comicface import build_dataset, input_pipeline, synthetic


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=500)
  p.add_argument('--config', default='gray128')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--json', action='store_true')
  a = p.parse_args()
  root = pathlib.Path(tempfile.gettempdir()) / f'comicface_input_{a.pairs}'
  if not (root / synthetic.V2_INNER / 'comics' / f'{a.pairs - 1}.jpg').exists():
    synthetic.write_dataset(root, a.pairs, size=256)
  builder = build_dataset.build(str(root), a.config, str(root / 'tfds'))
  split = input_pipeline.open_split(builder, 'train', a.batch)
  for _ in input_pipeline.train_batches(split, 0, 0):  # warm the page cache
    pass
  start, n = time.perf_counter(), 0
  for epoch in range(1, 4):
    for batch in input_pipeline.train_batches(split, 0, epoch):
      n += batch['label'].size
  rate = n / (time.perf_counter() - start)
  if a.json:
    print(json.dumps({'input_img_s': rate, 'config': a.config, 'batch': a.batch}))
  else:
    print(f'input pipeline, {a.config}, batch {a.batch}: {rate:.0f} images/s')


if __name__ == '__main__':
  host.restart_with_huge_pages()  # as main.py does
  main()
