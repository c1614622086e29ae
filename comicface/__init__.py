"""comicface: tell real face photos from comic drawings of the same faces."""
from comicface import host

host.set_xla_flags()  # before JAX starts
