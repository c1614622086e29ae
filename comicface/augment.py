"""Augmentation on the devices: `config.augment`, named ops run in order on the training
batch inside the jitted step, from the step's own key.

    config.augment = 'flip_lr|random_crop(pad=4)|mixup(0.2)'

An op is one function of (key, images [batch, height, width, channels], labels) and its
arguments, returning (images, labels); `@op(name)` registers it. Images come as the feed
gives them, uint8 in [0, 255]; an op that makes new pixel values (`floats`) gets them as
float32 in [0, 255], which the model scales as it scales uint8, and ops that only move
pixels keep the dtype they get. Labels are class indices [batch] until an op that mixes
them (`mixes_labels`) runs: from the first such op on they are float32 soft targets
[batch, classes], one-hot before it.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from comicface import errors

Batch = tuple[jax.Array, jax.Array]  # (images, labels)
Ops = Sequence[tuple[str, tuple, dict[str, Any]]]  # parsed: (name, args, kwargs) of each op
OpFn = Callable[..., Batch]


@dataclasses.dataclass(frozen=True)
class Op:
  fn: OpFn
  floats: bool  # it makes new pixel values: it takes float32 images
  mixes_labels: bool  # it takes and returns soft labels [batch, classes]


OPS: dict[str, Op] = {}


def op(name: str, floats: bool = False, mixes_labels: bool = False) -> Callable[[OpFn], OpFn]:
  """Registers the decorated function as the augmentation op `name`."""
  def register(fn: OpFn) -> OpFn:
    OPS[name] = Op(fn, floats, mixes_labels)
    return fn
  return register


def _need(ok: bool, what: str) -> None:
  if not ok:
    raise ValueError(what)


@op('flip_lr')
def flip_lr(key: jax.Array, images: jax.Array, labels: jax.Array) -> Batch:
  """Mirrors a random half of the images left-right."""
  flip = jax.random.bernoulli(key, 0.5, images.shape[:1])[:, None, None, None]
  return jnp.where(flip, images[:, :, ::-1], images), labels


@op('random_crop')
def random_crop(key: jax.Array, images: jax.Array, labels: jax.Array, pad: int = 4,
                mode: str = 'constant') -> Batch:
  """Pads each image by `pad` pixels on every side (zeros: 'constant', or 'reflect'), then
  crops it back to its size at a random offset of its own."""
  _need(isinstance(pad, int) and pad >= 0, f'pad must be an integer >= 0, not {pad!r}')
  _need(mode in ('constant', 'reflect'), f"mode must be 'constant' or 'reflect', not {mode!r}")
  b, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, image.shape[-1]))
  return jax.vmap(crop)(padded, offsets), labels


@op('random_resized_crop', floats=True)
def random_resized_crop(key: jax.Array, images: jax.Array, labels: jax.Array, scale: tuple = (0.08, 1.0),
                        ratio: tuple = (3 / 4, 4 / 3)) -> Batch:
  """Inception's crop: per image, a window of a random fraction `scale` of its area and a
  random aspect ratio (width / height, log-uniform in `ratio`), clipped to the image, at a
  random place, resized back to the image's size (bilinear, antialiased)."""
  _need(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, f'scale must be (a, b) with 0 < a <= b <= 1, not {scale!r}')
  _need(len(ratio) == 2 and 0 < ratio[0] <= ratio[1], f'ratio must be (a, b) with 0 < a <= b, not {ratio!r}')
  b, h, w, _ = images.shape
  area_key, ratio_key, place_key = jax.random.split(key, 3)
  area = jax.random.uniform(area_key, (b,), minval=scale[0], maxval=scale[1]) * h * w
  aspect = jnp.exp(jax.random.uniform(ratio_key, (b,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
  size = jnp.stack([jnp.minimum(jnp.sqrt(area / aspect), h), jnp.minimum(jnp.sqrt(area * aspect), w)], -1)
  corner = jax.random.uniform(place_key, (b, 2)) * (jnp.asarray([h, w]) - size)
  shape = images.shape[1:]

  def resize(image, size, corner):
    factor = jnp.asarray([h, w]) / size
    return jax.image.scale_and_translate(image, shape, (0, 1), factor, -corner * factor, 'linear')
  return jax.vmap(resize)(images, size, corner), labels


@op('brightness', floats=True)
def brightness(key: jax.Array, images: jax.Array, labels: jax.Array, delta: float = 0.2) -> Batch:
  """Adds to each image a random uniform(-delta, delta) of the full range (255), clipped to [0, 255]."""
  _need(isinstance(delta, (int, float)) and 0 <= delta <= 1, f'delta must be in [0, 1], not {delta!r}')
  shift = jax.random.uniform(key, (images.shape[0], 1, 1, 1), minval=-delta, maxval=delta) * 255.0
  return jnp.clip(images + shift, 0.0, 255.0), labels


def _partners(key: jax.Array, alpha: float, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A mixing weight ~ Beta(alpha, alpha) for the batch, each image's partner (a random
  permutation), and a key for what else the op draws."""
  _need(isinstance(alpha, (int, float)) and alpha > 0, f'alpha must be > 0, not {alpha!r}')
  weight_key, order_key, rest = jax.random.split(key, 3)
  return jax.random.beta(weight_key, alpha, alpha), jax.random.permutation(order_key, n), rest


@op('mixup', floats=True, mixes_labels=True)
def mixup(key: jax.Array, images: jax.Array, labels: jax.Array, alpha: float = 0.2) -> Batch:
  """mixup (Zhang et al. 2018): each image and its soft label blended with a partner's, by
  one weight for the batch drawn from Beta(alpha, alpha)."""
  weight, partner, _ = _partners(key, alpha, images.shape[0])
  return weight * images + (1 - weight) * images[partner], weight * labels + (1 - weight) * labels[partner]


@op('cutmix', mixes_labels=True)
def cutmix(key: jax.Array, images: jax.Array, labels: jax.Array, alpha: float = 1.0) -> Batch:
  """CutMix (Yun et al. 2019): a box of about 1 - w of the area (w ~ Beta(alpha, alpha),
  one box for the batch, clipped to the image) pasted from each image's partner; the
  labels mixed in the proportion of pixels each image keeps."""
  weight, partner, box_key = _partners(key, alpha, images.shape[0])
  _, h, w, _ = images.shape
  half = jnp.sqrt(1 - weight) * jnp.asarray([h, w]) / 2
  centre = jax.random.uniform(box_key, (2,)) * jnp.asarray([h, w])
  lo = jnp.clip(jnp.round(centre - half), 0, jnp.asarray([h, w])).astype(jnp.int32)
  hi = jnp.clip(jnp.round(centre + half), 0, jnp.asarray([h, w])).astype(jnp.int32)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  box = (rows >= lo[0]) & (rows < hi[0]) & (cols >= lo[1]) & (cols < hi[1])
  kept = 1 - box.sum() / (h * w)
  return jnp.where(box[None, :, :, None], images[partner], images), kept * labels + (1 - kept) * labels[partner]


def usage(name: str) -> str:
  """How the op `name` is written, with its arguments' defaults: 'random_crop(pad=4, mode='constant')'."""
  params = list(inspect.signature(OPS[name].fn).parameters.values())[3:]
  return f'{name}({", ".join(f"{p.name}={p.default!r}" for p in params)})' if params else name


def parse(spec: str) -> Ops:
  """The ops of `spec` ('flip_lr|random_crop(pad=4)'), each (name, args, kwargs), checked
  against its function (on a small batch, abstractly): a ConfigError names a bad one."""
  out = []
  for text in filter(None, (part.strip() for part in spec.split('|'))):
    try:
      node = ast.parse(text, mode='eval').body
      call = node if isinstance(node, ast.Call) else ast.Call(node, [], [])
      if not isinstance(call.func, ast.Name):
        raise ValueError(text)
      name = call.func.id
      args = tuple(ast.literal_eval(a) for a in call.args)
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError):
      raise errors.ConfigError(f'config.augment: {text!r} is not an op: write its name, or its name and literal '
                               f"arguments, e.g. 'random_crop(pad=4)'. Known ops: {sorted(OPS)}.") from None
    if name not in OPS:
      raise errors.ConfigError(f'config.augment: unknown op {name!r}. Known ops: {sorted(OPS)}.')
    try:
      inspect.signature(OPS[name].fn).bind(None, None, None, *args, **kwargs)
      jax.eval_shape(lambda k, x, y: apply([(name, args, kwargs)], k, x, y, 2), jax.random.PRNGKey(0),
                     jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.uint8), jax.ShapeDtypeStruct((2,), jnp.int32))
    except (TypeError, ValueError) as e:
      raise errors.ConfigError(f'config.augment: bad arguments in {text!r}: {e}. Use {usage(name)}; '
                               f'known ops: {sorted(OPS)}.') from None
    out.append((name, args, kwargs))
  return out


def apply(ops: Ops, key: jax.Array, images: jax.Array, labels: jax.Array,
          num_classes: int) -> Batch:
  """`ops` (of `parse`) in order on a batch: the first draws from `key` itself (as the MLP
  study's flip did), op i > 0 from `fold_in(key, i)`."""
  for i, (name, args, kwargs) in enumerate(ops):
    spec = OPS[name]
    if spec.floats:
      images = images.astype(jnp.float32)
    if spec.mixes_labels and labels.ndim == 1:
      labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    images, labels = spec.fn(key if i == 0 else jax.random.fold_in(key, i), images, labels, *args, **kwargs)
  return images, labels
