"""Tests for training/errors.py: how a user's mistake reaches the terminal."""

import pytest

from training import errors


def test_user_error_prints_one_error_line_and_exits_2(capsys):
  @errors.reporting_user_errors
  def main(argv):
    del argv
    raise errors.MissingInputError("no data at /x\nexpected layout:\n  a/")

  with pytest.raises(SystemExit) as e:
    main(["prog"])
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      "error: no data at /x\n  expected layout:\n    a/\n")


def test_programming_errors_keep_their_traceback_and_results_pass_through():
  @errors.reporting_user_errors
  def broken(argv):
    raise KeyError(argv[0])

  with pytest.raises(KeyError):
    broken(["prog"])
  assert errors.reporting_user_errors(lambda argv: 7)(["prog"]) == 7
  assert issubclass(errors.MissingInputError, FileNotFoundError)
  assert issubclass(errors.UserError, ValueError)
