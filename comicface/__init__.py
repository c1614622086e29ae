"""comicface: tell real face photos from comic drawings of the same faces.

    model = comicface.load('runs/default')   # see comicface.inference
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from comicface import host

if TYPE_CHECKING:
  import ml_collections

  from comicface import inference

host.set_xla_flags()  # before JAX starts


def load(workdir: str, config: ml_collections.ConfigDict | None = None, step: int | None = None) -> inference.Model:
  """The model trained in `workdir`: `comicface.inference.load`."""
  from comicface import inference  # pylint: disable=g-import-not-at-top  (JAX starts here, not on import)
  return inference.load(workdir, config, step)
