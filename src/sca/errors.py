"""Errors that mean "the input is wrong", as opposed to bugs.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from a user: a missing file, a malformed prompt, a folder that is not a model."""
