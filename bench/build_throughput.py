"""Images/s of the comic_faces builder vs. the CNN study's loop, on the same 1024x1024 JPEGs.

    python -m bench.build_throughput [--pairs 100] [--config gray128]

The study's loop: `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` then `cv2.resize(img, (128, 128))`,
one process. The builder: a full `download_and_prepare` (decode, resize, serialise raw pixels, write
array_record) on all cores. Also the decoding alone (`imaging.load_image` on all cores, writing
nothing): the most the builder could reach. Needs `pip install -r bench/requirements.txt` (OpenCV).
"""
import argparse
import concurrent.futures
import os
import pathlib
import shutil
import tempfile
import time

import cv2
import tensorflow_datasets as tfds

from comicface import imaging, synthetic
from tfds_builder.comic_faces import comic_faces_dataset_builder as comic_faces


def study_loop(files: list[pathlib.Path], size: int) -> float:
  start = time.perf_counter()
  for f in files:
    cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (size, size))
  return len(files) / (time.perf_counter() - start)


def decode_rate(files: list[pathlib.Path], size: int, mode: str) -> float:
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    list(pool.map(lambda f: imaging.load_image(f, size, mode), files))
  return len(files) / (time.perf_counter() - start)


def builder_rate(manual_dir: pathlib.Path, config: str, n: int) -> float:
  with tempfile.TemporaryDirectory() as data_dir:
    start = time.perf_counter()
    comic_faces.Builder(config=config, data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        file_format='array_record')
    return n / (time.perf_counter() - start)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--pairs', type=int, default=100)
  p.add_argument('--size', type=int, default=1024, help='side of the generated JPEGs')
  p.add_argument('--config', default='gray128')
  p.add_argument('--repeats', type=int, default=3)
  a = p.parse_args()
  source = pathlib.Path(tempfile.gettempdir()) / f'comicface_bench_{a.pairs}x{a.size}'
  if not (source / synthetic.V2_INNER / 'comics' / f'{a.pairs - 1}.jpg').exists():
    shutil.rmtree(source, ignore_errors=True)
    print(f'generating {a.pairs} pairs of {a.size}px JPEGs in {source} ...')
    synthetic.write_dataset(source, a.pairs, a.size)
  files = sorted(source.rglob('*.jpg'))
  config = comic_faces.Builder.builder_configs[a.config]
  print(f'{len(files)} files, {os.cpu_count()} cores, config {a.config}')
  ours, theirs, floor = [], [], []
  for _ in range(a.repeats):  # alternate, so all see the same machine state
    theirs.append(study_loop(files, config.size))
    ours.append(builder_rate(source, a.config, len(files)))
    floor.append(decode_rate(files, config.size, config.mode))
  o, t, d = (sorted(r)[len(r) // 2] for r in (ours, theirs, floor))
  print(f'study loop (cv2, 1 process): {t:7.1f} images/s')
  print(f'decoding alone (all cores):  {d:7.1f} images/s ({d / t:.2f}x)')
  print(f'comic_faces builder:         {o:7.1f} images/s')
  print(f'ratio: {o / t:.2f}x (median of {a.repeats})')


if __name__ == '__main__':
  main()
