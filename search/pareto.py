"""Pareto fronts for multi-objective search (NSGA-II's fast non-dominated sort and crowding
distance), generic over any number of objectives, each maximised or minimised."""
from __future__ import annotations

from typing import Sequence

Point = Sequence[float]


def _better_or_equal(a: Point, b: Point, maximize: Sequence[bool]) -> bool:
    return all((x >= y) if up else (x <= y) for x, y, up in zip(a, b, maximize))


def dominates(a: Point, b: Point, maximize: Sequence[bool]) -> bool:
    """`a` is at least as good as `b` in every objective and better in one."""
    return _better_or_equal(a, b, maximize) and tuple(a) != tuple(b)


def non_dominated_sort(points: Sequence[Point], maximize: Sequence[bool]) -> list[list[int]]:
    """Indices of `points` by front: the first front is the Pareto front, the next is the front of
    what is left, and so on (Deb et al. 2002, O(M N^2))."""
    if any(len(p) != len(maximize) for p in points):
        raise ValueError(f"points: every point needs {len(maximize)} objectives (one per `maximize` entry)")
    beats: list[list[int]] = [[] for _ in points]  # indices each point dominates
    count = [0] * len(points)  # how many points dominate each point
    for i, a in enumerate(points):
        for j in range(i + 1, len(points)):
            b = points[j]
            if dominates(a, b, maximize):
                beats[i].append(j)
                count[j] += 1
            elif dominates(b, a, maximize):
                beats[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i, c in enumerate(count) if c == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in beats[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """Per index of `front`, the sum over objectives of the normalised gap between its neighbours;
    the extremes of each objective get infinity so the ends of the front are always kept."""
    distance = dict.fromkeys(front, 0.0)
    if len(front) <= 2:
        return dict.fromkeys(front, float("inf"))
    for m in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = float("inf")
        if high == low:
            continue
        for prev, i, nxt in zip(order, order[1:], order[2:]):
            distance[i] += (points[nxt][m] - points[prev][m]) / (high - low)
    return distance


def pareto_front(points: Sequence[Point], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points."""
    return non_dominated_sort(points, maximize)[0] if points else []
