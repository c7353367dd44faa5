"""The exceptions the scripts turn into a one-line message."""


class UserError(Exception):
    """Bad input from the user (a file, a folder, a flag): not a bug.

    ``train.py`` and ``analyze.py`` print ``error: <message>`` for it and exit
    with status 1, without a traceback.
    """


class Interrupted(Exception):
    """Training stopped on a signal after saving its state; the message says
    where, and ``cli.run`` exits with 128 + ``signal``."""

    def __init__(self, message, signal):
        super().__init__(message)
        self.signal = signal
