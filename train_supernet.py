"""Train the single-path detection supernet: `smnas train`, from a checkout (see its --help)."""
import sys

from smnas.commands.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train_supernet.py"))
