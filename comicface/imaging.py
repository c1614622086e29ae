"""Decode any image file into the fixed-size array the models see.

One function, `load_image`, is used both by the dataset builder (once, at
build time) and by prediction on new images, so both see identical pixels.
Plain JPEGs (the whole Kaggle dataset) take a fast path: libjpeg-turbo through
simplejpeg, downscaled inside the decoder. Everything else goes through Pillow.
"""
from __future__ import annotations

import io
import os
import pathlib
from typing import Union

import numpy as np
from PIL import Image, ImageOps
import simplejpeg

from comicface import errors

# Refuse anything larger before decoding (a "decompression bomb"). The real
# dataset is 1024x1024; this admits images up to about 8000x8000.
MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = frozenset(
    {'.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff'})

Source = Union[str, os.PathLike, bytes, np.ndarray]


class ImageError(errors.UserError, ValueError):
  """A file that cannot be turned into an image (corrupt, empty, too big)."""


def is_image_name(name: str) -> bool:
  """Whether a file name looks like an image (hidden files never do)."""
  base = os.path.basename(name)
  return not base.startswith('.') and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
  """Converts any PIL mode (16-bit, palette, alpha, CMYK...) to 'L' or 'RGB'."""
  if img.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    # 16/32-bit greys: scale to 8 bits instead of clipping as convert() does.
    a = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith('I;16') or a.max() > 255 else 255.0
    img = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8))
  if img.mode == 'P':
    img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
  if img.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    # Transparent parts become white paper, as a viewer would show them.
    rgba = img.convert('RGBA')
    img = Image.new('RGB', rgba.size, (255, 255, 255))
    img.paste(rgba, mask=rgba.getchannel('A'))
  return img if img.mode == mode else img.convert(mode)


def _has_exif(jpeg: bytes) -> bool:
  """Whether a JPEG's header holds an EXIF segment (which may rotate the image)."""
  i = 2
  while i + 10 <= len(jpeg) and jpeg[i] == 0xFF:
    marker = jpeg[i + 1]
    if marker == 0xDA:  # start of scan: the header is over
      return False
    if marker == 0xE1 and jpeg[i + 4:i + 10] == b'Exif\0\0':
      return True
    i += 2 + int.from_bytes(jpeg[i + 2:i + 4], 'big')
  return False


def _decode_turbo(data: bytes, size: int, mode: str) -> np.ndarray | None:
  """A plain JPEG, decoded by libjpeg-turbo at the smallest DCT scale that keeps
  the shorter side >= `size`, as (h, w, C) uint8; None where Pillow must decode
  (not a JPEG, CMYK, EXIF, too big, or anything libjpeg-turbo reports as damaged)."""
  if not data.startswith(b'\xff\xd8') or _has_exif(data):
    return None
  try:
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    if colorspace not in ('Gray', 'YCbCr') or w * h > MAX_PIXELS:
      return None
    side = min(w, h)
    arr = simplejpeg.decode_jpeg(data, colorspace='GRAY' if mode == 'L' else 'RGB',
                                 min_height=size * h // side, min_width=size * w // side)
  except ValueError:
    return None
  return arr


def _decode_pil(data: bytes, size: int, mode: str) -> Image.Image:
  """Any format Pillow reads: EXIF orientation applied, converted to `mode`."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      w, h = img.size
      if w * h > MAX_PIXELS:
        raise ImageError(f'{w}x{h} image has more than {MAX_PIXELS} pixels; refused')
      side = min(w, h)
      if img.format == 'JPEG':
        img.draft(mode, (size * w // side, size * h // side))
      return _to_mode(ImageOps.exif_transpose(img), mode)
  except ImageError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ImageError(f'cannot decode image: {e}') from e


def _from_array(pixels: np.ndarray, mode: str) -> Image.Image:
  """A uint8 (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) array as a PIL image in `mode`."""
  if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
      pixels.ndim == 3 and pixels.shape[-1] not in (1, 3, 4)):
    raise ImageError(f'an image array must be uint8 of shape (h, w[, 1|3|4]), not '
                     f'{pixels.dtype} {pixels.shape}')
  return _to_mode(Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels), mode)


def load_image(source: Source, size: int, mode: str) -> np.ndarray:
  """Decodes `source` (a path, encoded bytes, or a uint8 pixel array) to a
  `(size, size, C)` uint8 array.

  Steps: EXIF orientation, colour conversion to `mode` ('L' or 'RGB'), a centre
  crop to a square, and an antialiased (Lanczos) resize. JPEGs are first
  downscaled inside the decoder (DCT scaling), which is several times faster.
  Raises `ImageError` for anything that is not a readable image of sane size.
  """
  if mode not in ('L', 'RGB'):
    raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
  if isinstance(source, np.ndarray):
    img = _from_array(source, mode)
  else:
    data = source if isinstance(source, bytes) else pathlib.Path(source).read_bytes()
    arr = _decode_turbo(data, size, mode)
    if arr is not None and arr.shape[:2] == (size, size):
      return arr  # the decoder's own scaling gave the size: cropping and resizing change nothing
    img = _decode_pil(data, size, mode) if arr is None else Image.fromarray(arr.squeeze(-1) if mode == 'L' else arr)
  w, h = img.size
  side = min(w, h)
  box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
  img = img.crop(box).resize((size, size), Image.Resampling.LANCZOS)
  arr = np.asarray(img, dtype=np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr
