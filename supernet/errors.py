"""Errors a run reports to its user: the scripts print the message and exit with a code."""


class TrainError(RuntimeError):
    """A run cannot go on; the message is for the user (the script prints it, exit code 2)."""


class Interrupted(TrainError):
    """Ctrl-C: the run saved a checkpoint at a step boundary and stopped (exit code 130)."""
