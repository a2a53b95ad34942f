"""Search over a space of categorical choices: Pareto utilities now; the evolution is built on them."""
from .pareto import crowding_distance, dominates, non_dominated_sort, pareto_front

__all__ = ["crowding_distance", "dominates", "non_dominated_sort", "pareto_front"]
