"""comicface: tell real face photos from comic drawings of the same faces.

    model = comicface.load('runs/default')   # see comicface.inference
"""
from comicface import host

host.set_xla_flags()  # before JAX starts


def load(workdir: str, config=None, step: int | None = None):
  """The model trained in `workdir`: `comicface.inference.load`."""
  from comicface import inference  # pylint: disable=g-import-not-at-top  (JAX starts here, not on import)
  return inference.load(workdir, config, step)
