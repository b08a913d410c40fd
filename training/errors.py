"""UserError: a mistake in the command, config or data, not in the code.

run.py prints a UserError as one line, `error: <message>`, and exits with
status 2, without a traceback: the message says what to change (a missing
data folder and its expected layout, a bad config or flag value, a missing
checkpoint, a config that differs from the checkpoint's). Any other exception
is a programming error and keeps its traceback.

UserError subclasses ValueError so callers that catch ValueError (and tests
that expect it) see no difference. `reporting_user_errors` gives any absl
main (run.py, the studies) that behaviour.
"""

import functools
import sys


class UserError(ValueError):
  """An error the user fixes by changing the command, config or data."""


class MissingInputError(UserError, FileNotFoundError):
  """A UserError for a missing file or folder (also a FileNotFoundError)."""


def format_user_error(error: UserError) -> str:
  """`error: <first line>`, further lines of the message indented below."""
  first, *rest = str(error).strip().splitlines() or [type(error).__name__]
  return "\n".join([f"error: {first}"] + [f"  {line}" for line in rest])


def reporting_user_errors(main):
  """`main` (an absl main) printing a UserError as `format_user_error` and
  exiting with status 2, without a traceback; other errors propagate."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except UserError as e:
      print(format_user_error(e), file=sys.stderr, flush=True)
      sys.exit(2)
  return wrapped
