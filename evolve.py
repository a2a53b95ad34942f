"""Search a trained supernet under a latency budget: `smnas search`, from a checkout (see its --help)."""
import sys

from smnas.commands.search import main

if __name__ == "__main__":
    sys.exit(main(prog="evolve.py"))
