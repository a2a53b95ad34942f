"""Search over a space of categorical choices: the evolution engine and Pareto utilities."""
from .evolution import Evolution, Individual, Objective, SearchError
from .pareto import crowding_distance, dominates, non_dominated_sort, pareto_front

__all__ = ["Evolution", "Individual", "Objective", "SearchError", "crowding_distance", "dominates", "non_dominated_sort", "pareto_front"]
