"""The runtimes a latency table can time in: eager PyTorch, ONNX Runtime, or `torch.compile`.

A backend turns a runner (a module with its example input tensors, `latency.ops.Runner`) into a
callable that runs it once; `latency.measure` times that callable the same way for every
backend. Detectors ship through ONNX Runtime, TensorRT or a compiled graph, which fuse ops
(convolution + BN + activation, element-wise chains), so an op's cost there differs from eager's:
a table must be timed in the runtime the detector will run in. A new runtime (TensorRT, say) is
one more function here.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from supernet.io import atomic_write_bytes, error_line

BACKENDS = ("eager", "onnxruntime", "compile")
ONNX_OPSET = 17


class BackendError(ValueError):
    """A runner the backend cannot build or run (an op it does not support, a failed compile)."""


def check_backend(name: str, device: str = "cpu") -> None:
    """Raise ValueError naming the flag unless the backend `name` (one of `BACKENDS`, which
    `Settings` checks) can run on `device` here: before anything is measured, not at the first op."""
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
            raise ValueError("`backend` onnxruntime: needs the onnxruntime and onnx packages (pip install 'smnas[export]', "
                             "or onnxruntime-gpu for CUDA)")
        if device.startswith("cuda"):  # an op's inputs would be copied from the host at every run (no IO binding yet)
            raise ValueError(f"`backend` onnxruntime `device` {device}: only the CPU execution provider is supported so far")


def runtime(name: str, device: str = "cpu") -> dict[str, Any]:
    """What a table records of its backend: the runtime, its version and (ONNX Runtime) provider."""
    if name == "onnxruntime":
        return {"backend": name, "version": importlib.metadata.version("onnxruntime"), "provider": _provider(device)}
    return {"backend": name, "version": torch.__version__}


def runnable(runner: torch.nn.Module, backend: str, threads: int | None = None) -> Callable[[], object]:
    """A callable that runs `runner` on its example inputs once, in `backend`. Eager: the runner
    itself. onnxruntime: the runner exported (the TorchScript-based exporter, whose NMS and
    RoIAlign export the detector exports rely on too) with its inputs as the graph's inputs, so
    that nothing is constant-folded away, and run by an InferenceSession on the inputs' device.
    compile: `torch.compile` of the runner (compiled at its first call, in the warm-up).

    A runner with a `graph_file` (a path) is exported once: a later runner with the same file
    loads the graph from it. A table build sets one per op (its key seeds the weights, so the
    graph is the same each pass); exporting is most of what a measurement costs there."""
    if backend == "eager":
        return runner
    built = runner.__dict__.setdefault("_runnables", {})  # a runner measured again (the noise check's) is built once
    if backend not in built:
        built[backend] = _build(runner, tuple(runner.inputs), backend, threads)
    return built[backend]


def _build(runner: torch.nn.Module, inputs: tuple[torch.Tensor, ...], backend: str, threads: int | None) -> Callable[[], object]:
    if backend == "compile":
        try:
            compiled = torch.compile(runner, dynamic=False)
        except Exception as e:  # noqa: BLE001 (any compiler failure names the runner instead)
            raise BackendError(f"compile: {_reason(e)}") from None
        return lambda: compiled(*inputs)
    if backend == "onnxruntime":
        return _ort_runnable(runner, inputs, threads, getattr(runner, "graph_file", None))
    raise BackendError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {error_line(e)}"


def _provider(device: str) -> str:
    return "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"


def _ort_runnable(runner: torch.nn.Module, inputs: tuple[torch.Tensor, ...], threads: int | None,
                  graph_file: Path | None = None) -> Callable[[], object]:
    session, feeds = ort_session(runner, inputs, threads, graph_file)

    def run() -> object:
        try:
            return session.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"onnxruntime: the run failed ({_reason(e)})") from None

    return run


def ort_session(runner: torch.nn.Module, inputs: tuple[torch.Tensor, ...], threads: int | None,
                graph_file: Path | None = None, profile: bool = False) -> tuple[Any, dict]:
    """(an InferenceSession of `runner` exported as the onnxruntime backend times it, its feeds);
    with `profile`, ONNX Runtime's per-node profiler on (`session.end_profiling()` writes it)."""
    import onnxruntime

    names = [f"input{i}" for i in range(len(inputs))]
    try:
        if graph_file is not None and graph_file.is_file():
            graph = graph_file.read_bytes()
        else:
            buffer = io.BytesIO()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notes
                torch.onnx.export(runner, inputs, buffer, dynamo=False, opset_version=ONNX_OPSET, input_names=names)
            graph = buffer.getvalue()
            if graph_file is not None:
                atomic_write_bytes(graph_file, graph)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        options.enable_profiling = profile
        device = inputs[0].device.type if inputs else "cpu"
        session = onnxruntime.InferenceSession(graph, options, providers=[_provider(device)])
    except Exception as e:  # noqa: BLE001 (an unsupported op: named by the caller, with this line)
        raise BackendError(f"onnxruntime: cannot export or load it ({_reason(e)})") from None
    wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph never reads (a shape-only image)
    return session, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs) if n in wanted}
