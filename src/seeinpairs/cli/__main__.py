"""``python -m seeinpairs.cli``: the command line, as torchrun and accelerate launch it."""

from .app import main

main()
