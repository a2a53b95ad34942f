"""The whole pipeline end to end on the built-in shapes data: `smnas demo`, from a checkout (see its --help)."""
import sys

from smnas.commands.demo import main

if __name__ == "__main__":
    sys.exit(main(prog="end_to_end.py"))
