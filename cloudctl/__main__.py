"""``python -m cloudctl``: the same command line as the ``cloudctl`` script."""

from .cli import main

main()
