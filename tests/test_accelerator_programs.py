"""The programs a GPU or TPU would run, checked from a CPU: each model's train, eval and
predict steps (single and stacked, streamed and resident) as 'auto' builds them for an
accelerator lower with jax.export for ('cuda', 'tpu'), and no CPU kernel reaches them."""
import math

import jax
import jax.numpy as jnp
import pytest

from comicface import input_pipeline
from comicface import steps as steps_lib
from conftest import tiny_config
from configs import default, mlp, resnet

CONFIGS = {'cnn': default.get_config, 'mlp': mlp.get_config, 'resnet': resnet.get_config}


def programs(config, platform: str, stacked: bool) -> dict[str, str]:
  """Each jitted step of `config` built for `platform`, exported for ('cuda', 'tpu') (or
  the CPU), as MLIR text (with the source locations of its operations). Prediction is
  of one model, never a stack."""
  task = input_pipeline.Task.of_name(config.dataset.name)
  trials = 2 if stacked else 1
  steps = steps_lib.Steps(steps_lib.static_config(config), len(task.classes), task.image_shape,
                          steps_lib.make_mesh(trials), stacked, platform=platform)
  spec = lambda shape, dtype, sharding: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  with_sharding = lambda tree, sharding: jax.tree.map(lambda x: spec(x.shape, x.dtype, sharding), tree)
  keys = jax.ShapeDtypeStruct((trials, 2) if stacked else (2,), jnp.uint32)
  state = with_sharding(jax.eval_shape(steps.init, keys), steps.state_sharding)
  values = {k: 0.0 for k in steps_lib.hyperparameters(config)}
  hparams = with_sharding(jax.eval_shape(lambda: steps.put_hparams([values] * trials)), steps.state_sharding)
  b, k = config.batch_size, steps.steps_per_call
  n = 2 * k * b
  images = lambda *lead, sharding: spec((*lead, *task.image_shape), jnp.uint8, sharding)
  sums = with_sharding(jax.eval_shape(lambda: steps.put_sums(trials)), steps.state_sharding)
  block = {'image': images(k, b, sharding=steps.blocks), 'label': spec((k, b), jnp.int32, steps.blocks)}
  data = {'image': spec((n, math.prod(task.image_shape)), jnp.uint8, steps.replicated),  # as resident: flat rows
          'label': spec((n,), jnp.int32, steps.replicated)}
  index = spec((), jnp.int32, steps.replicated)
  calls = {'train': (steps.train, state, hparams, block, sums),
           'train_resident': (lambda s, h, d, e, m: steps.train_resident(s, h, d, e, m, k), state, hparams, data,
                              {'order': spec((n,), jnp.int32, steps.replicated), 'first': index}, sums),
           'eval': (steps.eval, state, images(b, sharding=steps.data)),
           'eval_resident': (steps.eval_resident, state, data['image'], spec((2, b), jnp.int32, steps.replicated),
                             index),
           **({} if stacked else {'predict': (steps.predict, state, images(b, sharding=steps.data))})}
  platforms = ('cpu',) if platform == 'cpu' else ('cuda', 'tpu')
  return {name: jax.export.export(jax.jit(fn), platforms=platforms)(*args).mlir_module()
          for name, (fn, *args) in calls.items()}


@pytest.mark.parametrize('stacked', [False, True], ids=['single', 'stacked'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_accelerator_steps_lower_for_cuda_and_tpu_without_cpu_kernels(name, stacked):
  config = CONFIGS[name]()
  for step, text in programs(config, 'cuda', stacked).items():
    assert 'cpu_kernels.py' not in text, f'{name} {step}: a CPU kernel reached the accelerator program'
    assert 'strided_slices' not in text, f'{name} {step}: the CPU slicing reached the accelerator program'


def test_the_check_sees_cpu_kernels_where_they_are():
  """The premise of the test above: on a CPU the same programs do hold the CPU kernels and slicing."""
  texts = programs(tiny_config(), 'cpu', stacked=False)
  assert 'cpu_kernels.py' in texts['train'] and 'strided_slices' in texts['train']
