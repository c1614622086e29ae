"""Decode any image file into the fixed-size array the models see.

One function, `load_image`, is used both by the dataset builder (once, at
build time) and by prediction on new images, so both see identical pixels. Its
decoding lives in `comicface.preprocess`, a file of its own that needs only
numpy and Pillow: the export writes it next to the model, so the exported model
sees these pixels too.
"""
from __future__ import annotations

import os

import numpy as np

from comicface import errors
from comicface import preprocess

IMAGE_EXTENSIONS = frozenset(
    {'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'})

Source = preprocess.Source


class ImageError(errors.UserError, preprocess.ImageError):
  """A file that cannot be turned into an image (corrupt, empty, too big)."""


def is_image_name(name: str) -> bool:
  """Whether a file name looks like an image (hidden files never do)."""
  base = os.path.basename(name)
  return not base.startswith('.') and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def load_image(source: Source, size: int, mode: str) -> np.ndarray:
  """`preprocess.load_image`: `source` (a path, encoded bytes, or a uint8 pixel array)
  as a `(size, size, C)` uint8 array (EXIF orientation, `mode` 'L' or 'RGB', the
  centred square, Lanczos). Raises `ImageError` for anything that is not a readable
  image of sane size."""
  try:
    return preprocess.load_image(source, size, mode)
  except preprocess.ImageError as e:
    raise ImageError(str(e)) from e
