"""The one exception type the scripts turn into a one-line message."""


class UserError(Exception):
    """Bad input from the user (a file, a folder, a flag): not a bug.

    ``train.py`` and ``analyze.py`` print ``error: <message>`` for it and exit
    with status 1, without a traceback.
    """
