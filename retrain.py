"""Retrain searched or hand-designed architectures: `smnas retrain`, from a checkout (see its --help)."""
import sys

from smnas.commands.retrain import main

if __name__ == "__main__":
    sys.exit(main(prog="retrain.py"))
