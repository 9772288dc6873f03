"""``python -m streams.cli`` is the ``riskstream`` command."""

from streams.cli import main

main()
