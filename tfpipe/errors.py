"""The one exception type tfpipe raises for problems the user can fix.

Every message says what was wrong and what to do instead, in one line, so the
command-line layer can print it without a traceback.
"""


class TfpipeError(ValueError):
    """Bad input or an unusable environment, detected before long work starts."""
