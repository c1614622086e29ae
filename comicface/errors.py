"""The base of the errors a user can fix: main.py prints their message, not a traceback."""


class UserError(Exception):
  """What went wrong and what to do about it, in the message. main.py prints it alone
  and exits 1 (`--verbose` or COMICFACE_VERBOSE=1 shows the traceback too)."""


class ConfigError(UserError, ValueError):
  """A config field holds a value that cannot work; the message names the field."""
