"""UserError: a mistake in the command, config or data, not in the code.

run.py prints a UserError as one line, `error: <message>`, and exits with
status 2, without a traceback: the message says what to change (a missing
data folder and its expected layout, a bad config or flag value, a missing
checkpoint, a config that differs from the checkpoint's). Any other exception
is a programming error and keeps its traceback.

UserError subclasses ValueError so callers that catch ValueError (and tests
that expect it) see no difference.
"""


class UserError(ValueError):
  """An error the user fixes by changing the command, config or data."""


class MissingInputError(UserError, FileNotFoundError):
  """A UserError for a missing file or folder (also a FileNotFoundError)."""
