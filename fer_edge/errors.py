"""One exception type for every user-facing failure.

The command-line layers catch `FerEdgeError` and print its message as a single
line with a non-zero exit code, so a bad file never shows a traceback. Code
raises it with a message that names the file (and the line) at fault.
"""


class FerEdgeError(Exception):
    """A problem the user can fix: bad input, a missing file, a tampered bundle."""
