"""The `fastgan` console script's entry point, outside the package on purpose.

Importing anything under `fastgan` runs `fastgan/__init__.py`, which imports torch (1-3 s).
A Ctrl-C in that time used to end with a traceback, or worse: numpy and torch catch some
errors of their own imports, so a KeyboardInterrupt landing inside them can turn into an
ImportError or be swallowed. Nothing has been read or written yet, so a Ctrl-C then simply
ends the process with 130; from the moment the command starts, fastgan.cli handles it (the
write in flight lands first).
"""

import os
import signal
import sys

EXIT_INTERRUPTED = 130  # the same code as fastgan._argtypes.EXIT_INTERRUPTED (which needs fastgan loaded)


def _exit_interrupted(signum, frame):
    os._exit(EXIT_INTERRUPTED)  # no KeyboardInterrupt for the importing modules to catch


def main(argv=None):
    previous = signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        from fastgan.cli import main as fastgan_main
    finally:
        signal.signal(signal.SIGINT, previous)
    return fastgan_main(argv)


if __name__ == "__main__":
    sys.exit(main())
