"""The models, one file each, loaded by name: `config.model.name = 'cnn'` is `cnn.py`'s `Model`.

A model file defines `Model`, a Linen module that takes uint8 images (and `train`)
and returns logits. Its fields of plain types (int, float, str, bool, sequences of
them, Literals) are what `config.model` may set, except `num_classes` and `dtype`, which come
from the data and `config.dtype`. Optionally, the file also defines:

  VALUES       the fields that a stack of trials may differ in (data, not shapes);
  CPU_KERNELS  {'train': {...}, 'predict': {...}}: fields swapped in on CPUs;
  validate(fields)  checks of the fields' values, each a `require(...)`.

Adding a model is adding its file and a config naming it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib
import math
import pkgutil
import types
import typing
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp

from comicface import errors

FRAMEWORK_FIELDS = ('parent', 'name', 'num_classes', 'dtype')  # set by create(), not by a config
_PLAIN = (int, float, str, bool)


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != 'layers')


def load(name: str) -> types.ModuleType:
  """The model file `comicface/models/<name>.py`."""
  if name not in available():
    raise errors.ConfigError(f'config.model.name={name!r} is invalid: must be one of {available()} '
                                    '(a model is a file in comicface/models/).')
  return importlib.import_module(f'{__name__}.{name}')


def _fits(value: Any, hint: Any) -> bool:
  if typing.get_origin(hint) is typing.Literal:
    return value in typing.get_args(hint)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint in (str, bool):
    return isinstance(value, hint)
  args = typing.get_args(hint)
  return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)


def _is_plain(hint: Any) -> bool:
  if hint in _PLAIN or typing.get_origin(hint) is typing.Literal:
    return True
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  return origin in (tuple, list, collections.abc.Sequence) and bool(args) and args[0] in _PLAIN


def config_fields(model: type[nn.Module]) -> dict[str, Any]:
  """The fields of `model` that a config sets: name -> type."""
  hints = typing.get_type_hints(model)
  return {f: hints[f] for f in model.__dataclass_fields__
          if f not in FRAMEWORK_FIELDS and _is_plain(hints.get(f))}


def require(ok: bool, field: str, value: Any, valid: str) -> None:
  """For a model file's `validate`: raises ConfigError naming `config.model.<field>` unless `ok`."""
  if not ok:
    raise errors.ConfigError(f'config.model.{field}={value!r} is invalid: must be {valid}.')


def validate(model_config: Mapping[str, Any]) -> None:
  """Raises ConfigError naming an unknown, ill-typed or out-of-range field of `config.model`."""
  module = load(model_config['name'])
  known = config_fields(module.Model)
  for field, value in model_config.items():
    if field == 'name':
      continue
    if field not in known:
      raise errors.ConfigError(f'config.model.{field} is not a field of {model_config["name"]}: '
                                      f'its fields are {sorted(known)}.')
    if not _fits(value, known[field]):
      hint = known[field]
      valid = (f'one of {list(typing.get_args(hint))}' if typing.get_origin(hint) is typing.Literal
               else f'of type {getattr(hint, "__name__", hint)}')
      raise errors.ConfigError(f'config.model.{field}={value!r} is invalid: must be {valid}.')
  if hasattr(module, 'validate'):
    module.validate(dict(model_config))


def values(model_config: Mapping[str, Any]) -> tuple[str, ...]:
  """The model's fields that a stack of trials may differ in."""
  return tuple(getattr(load(model_config['name']), 'VALUES', ()))


def create(model_config: Mapping[str, Any], num_classes: int, dtype: str = 'float32',
           kernels: str = 'xla', purpose: str = 'train', **overrides: Any) -> nn.Module:
  """The module of `config.model`, for `num_classes` classes, computing in `dtype`.

  `kernels='cpu'` swaps in the model's CPU_KERNELS for `purpose` ('train' or
  'predict'); `overrides` set fields (a stacked trial's traced values).
  """
  module = load(model_config['name'])
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items() if k != 'name'}
  if kernels == 'cpu':
    fields.update(getattr(module, 'CPU_KERNELS', {}).get(purpose, {}))
  return module.Model(num_classes=num_classes, dtype=jnp.dtype(dtype), **{**fields, **overrides})


@dataclasses.dataclass(frozen=True)
class Cost:
  """What a model's forward pass on one image computes: multiply-add FLOPs of its
  convolutions and dense layers, and whether it has convolutions."""
  flops: float
  convolutions: bool


def _count(jaxpr: jex.core.Jaxpr) -> tuple[float, bool]:
  flops, convolutions = 0.0, False
  for eqn in jaxpr.eqns:
    out = eqn.outvars[0].aval
    if eqn.primitive.name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      flops += 2 * math.prod(out.shape) * math.prod(eqn.invars[0].aval.shape[d] for d in contracting)
    elif eqn.primitive.name == 'conv_general_dilated':
      kernel, spec = eqn.invars[1].aval, eqn.params['dimension_numbers'].rhs_spec  # (out, in, spatial...)
      flops += 2 * math.prod(out.shape) * math.prod(kernel.shape[d] for d in spec[1:])
      convolutions = True
    for sub in jex.core.jaxprs_in_params(eqn.params):
      f, c = _count(sub)
      flops, convolutions = flops + f, convolutions or c
  return flops, convolutions


@functools.lru_cache(maxsize=None)
def _cost(model_config: tuple, num_classes: int, image_shape: tuple[int, ...], dtype: str) -> Cost:
  model = create(dict(model_config), num_classes, dtype)
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return Cost(*_count(jax.make_jaxpr(model.apply)(variables, x).jaxpr))


def cost(model_config: Mapping[str, Any], num_classes: int, image_shape: tuple[int, ...],
         dtype: str = 'float32') -> Cost:
  """The `Cost` of `config.model` (Flax's own layers), from its traced program alone: the
  same on every machine, backend and jaxlib build."""
  frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in model_config.items()))
  return _cost(frozen, num_classes, tuple(image_shape), dtype)
