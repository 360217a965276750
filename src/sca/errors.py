"""Errors that mean "the input is wrong", as opposed to bugs.

The CLI prints these as one line and exits with status 2; the server answers them with a 4xx. Anything else is a
bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from a user: a missing file, a malformed prompt, a folder that is not a model."""


def one_line(error: BaseException) -> str:
    """The message of an `InputError` as one line, also when a DataLoader worker raised it (PyTorch re-raises it
    in the main process with the worker's whole traceback as its message)."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def require_whole(value, name: str, minimum: int = 1) -> int:
    """`value` if it is a whole number of at least `minimum`, else an `InputError` naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be at least {minimum} (a whole number), got {value!r}")
    return value
