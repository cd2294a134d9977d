"""``python -m router`` and the ``diffroute`` console script (:func:`run`)."""

from __future__ import annotations

import sys


def run() -> None:
    """The command line; an interrupt while it is still loading (about a third of a second of
    imports) is one line and exit 130, as it is once a command runs — not a traceback."""
    try:
        from router.cli import main

        main()
    except KeyboardInterrupt:
        sys.stderr.write("diffroute: error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
