"""``python -m router`` runs the ``diffroute`` command line."""

from router.cli import main

main()
