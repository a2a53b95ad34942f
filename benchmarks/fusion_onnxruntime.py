"""Does an op cost inside a whole ONNX Runtime graph what it costs alone? (fusion across ops)

    python benchmarks/fusion_onnxruntime.py --space tiny --threads 2 --archs 12 --out benchmarks/results/fusion_onnxruntime_cpu_tiny.json

The onnxruntime latency table times each op (stem, block, neck, head, post-processing) as its own
graph, so the fusions ONNX Runtime makes inside an op (Conv + BN folded, Conv + activation, Conv
+ residual Add) are in its entry, and those across two ops are not. This measures what is left:
for random subnets, each run with ONNX Runtime's per-node profiler, the kernel time of every node
of the whole detector's graph, attributed to the part its name says it belongs to (the exporter
names nodes by module: backbone = stem and blocks, the neck, the head with its post-processing,
io = letterbox and restore); against it, the same parts' ops each exported and profiled alone, as
the table times them. ONNX Runtime's layout reorders (NCHWc), named by no module, are their own
part in the whole graph. Also the wall time of the whole graph against the sum of the ops' wall
times (what the table adds up before its correction), timed with the profiler off. Prints one JSON line: per part, the median
and range over subnets of in-graph / alone.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from latency.backends import ort_session
from latency.measure import Settings
from latency.ops import OpContext, arch_ops, detector_runner, iter_archs, op_runner
from supernet.cli import log_to_stderr
from supernet.io import atomic_json, emit_result
from supernet.space import Arch, SearchSpace

PART_OF_KIND = {"io": "io", "stem": "backbone", "block": "backbone", "neck": "neck", "head": "head", "post": "head"}
PARTS = ("io", "backbone", "neck", "head")


def profile(runner, threads: int, runs: int, warmup: int) -> tuple[dict[str, float], float]:
    """(median kernel time per node in ms, with the profiler on; median wall time of a run in ms,
    from a session without it: the profiler's own cost per node would swell the wall time)."""
    inputs = tuple(runner.inputs)
    with tempfile.TemporaryDirectory() as folder:  # exported once, loaded by both sessions
        graph = Path(folder) / "graph.onnx"
        session, feeds = ort_session(runner, inputs, threads, graph)
        walls = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            session.run(None, feeds)
            if i >= warmup:
                walls.append(time.perf_counter() - start)
        session, feeds = ort_session(runner, inputs, threads, graph, profile=True)
    for _ in range(warmup + runs):
        session.run(None, feeds)
    trace_file = session.end_profiling()
    try:
        trace = json.loads(Path(trace_file).read_text())
    finally:
        os.remove(trace_file)
    durations = defaultdict(list)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            durations[event["name"][: -len("_kernel_time")]].append(event["dur"] / 1000)
    # the last `runs` occurrences of each node are the timed runs (the warm-up ran first)
    return {name: statistics.median(d[-runs:]) for name, d in durations.items()}, 1000 * statistics.median(walls)


def part_of_node(name: str, arch: Arch) -> str:
    """The part a node of the whole detector's graph belongs to, by the first module scope in its
    name that names one ("/model/backbone/...": backbone)."""
    if not name.startswith("/"):
        return "layout"  # ReorderInput / ReorderOutput that ONNX Runtime inserts
    parts = {"backbone": "backbone", arch.neck.type: "neck", arch.head.type: "head"}
    return next((parts[scope] for scope in name.split("/")[1:-1] if scope in parts), "io")


def measure(arch: Arch, ctx: OpContext, settings: Settings, runs: int, warmup: int) -> dict:
    with torch.no_grad():
        nodes, whole_wall = profile(detector_runner(arch, ctx, settings), settings.threads, runs, warmup)
        in_graph = defaultdict(float)
        for name, ms in nodes.items():
            in_graph[part_of_node(name, arch)] += ms
        alone, alone_wall = defaultdict(float), 0.0
        for op in arch_ops(arch):
            op_nodes, wall = profile(op_runner(op, ctx, settings), settings.threads, runs, warmup)
            alone[PART_OF_KIND[op.kind]] += sum(op_nodes.values())
            alone_wall += wall
    return {"hash": arch.hash(), "neck": arch.neck.type, "head": arch.head.type, "resolution": arch.resolution,
            "in_graph_ms": {p: round(in_graph[p], 4) for p in (*PARTS, "layout")},
            "alone_ms": {p: round(alone[p], 4) for p in PARTS},
            "wall_ms": {"whole": round(whole_wall, 4), "sum_of_ops": round(alone_wall, 4)}}


def summary(points: list[dict]) -> dict:
    def spread(values: list[float]) -> dict:
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}

    out = {f"{p}_in_graph_over_alone": spread([q["in_graph_ms"][p] / q["alone_ms"][p] for q in points if q["alone_ms"][p] > 0])
           for p in PARTS}
    out["kernels_in_graph_over_alone"] = spread([sum(q["in_graph_ms"].values()) / sum(q["alone_ms"].values()) for q in points])
    out["layout_share_in_graph"] = spread([q["in_graph_ms"]["layout"] / sum(q["in_graph_ms"].values()) for q in points])
    out["wall_whole_over_sum_of_ops"] = spread([q["wall_ms"]["whole"] / q["wall_ms"]["sum_of_ops"] for q in points])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="tiny", help="a preset or a space JSON file")
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    log_to_stderr()
    log = logging.getLogger("fusion")
    space = SearchSpace.resolve(args.space)
    torch.set_num_threads(args.threads)
    settings = Settings(device="cpu", threads=args.threads, backend="onnxruntime")
    ctx = OpContext.for_space(space, args.num_classes)
    points = []
    for i, arch in enumerate(iter_archs(space, args.archs, args.seed)):
        points.append(measure(arch, ctx, settings, args.runs, args.warmup))
        log.info(f"{i + 1}/{args.archs} {arch.hash()}: {json.dumps(points[-1]['in_graph_ms'])} vs {json.dumps(points[-1]['alone_ms'])}")
    result = {"benchmark": "fusion_onnxruntime", "space": args.space, "threads": args.threads, "archs": len(points),
              "runs": args.runs, "summary": summary(points), "points": points}
    if args.out:
        atomic_json(result, args.out)
    emit_result({k: v for k, v in result.items() if k != "points"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
