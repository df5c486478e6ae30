"""Inductor's CUDA Triton kernels for a compiled training step, generated on a machine without a
GPU, and each compiled for sm_90 with a chosen Triton (e.g. the device machine's older one).

Why: the H200 machine's Triton (3.6, with torch 2.11) once failed to compile one of inductor's
fused kernels for the decomposed left-spin form ("operand #1 does not dominate this use",
docs/fp4_gpu_notes.md, twenty-second session), which cost device time to find. This reproduces
that failure here and checks a change before it reaches the GPU:

    pip install --target /tmp/triton36 --no-deps /opt/pypi/files/triton-3.6.0-*.whl
    python tools/inductor_cuda_kernels.py --target left-spin-stack --form decomposed \\
        --out /tmp/kernels --triton-path /tmp/triton36
    python tools/inductor_cuda_kernels.py --target apt-model --form decomposed --autopoietic \\
        --out /tmp/kernels --triton-path /tmp/triton36

How: the step is traced on the CPU into aot_autograd's partitioned forward and backward graphs
(inductor's decompositions and partitioner), their device arguments are rewritten to cuda, and
inductor's compile_fx_inner lowers each against fake CUDA tensors on a fake compute capability
9.0 device (torch.cuda's queries and Triton's driver answered here); the generated wrapper is
read for its kernels instead of being loaded. Each kernel is then compiled by
tools/triton_kernel_repro.py in a child process with ``--triton-path`` first on its path.

Limits: the kernels are this torch's inductor's (the device may run an older torch), the graph
is the one the CPU traced (its CPU-only ops, such as the CPU flash attention, are called as they
are and produce no kernel), and inductor's pattern-matcher passes are off (they build real CUDA
tensors). A kernel that fails here fails on a GPU with that Triton; one that compiles here may
still differ from what the device's torch generates.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import torch

HERE = Path(__file__).resolve().parent
CUDA = torch.device("cuda", 0)


def left_spin_stack(form: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """Three (LayerNorm, Linear, ReLU) branches joined by left-spin sites, bf16 branch outputs beside
    a float32 stream (as under autocast); x [8, 16, 64]."""
    from apt_ext.nn import LeftSpinChain, LeftSpinResidual

    class Stack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lins = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(3))
            self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(64) for _ in range(3))
            self.sites = torch.nn.ModuleList(LeftSpinResidual(compiled_form=form) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            chain = LeftSpinChain()
            for lin, norm, site in zip(self.lins, self.norms, self.sites):
                x = site(x, torch.relu(lin(norm(x))).to(torch.bfloat16), chain)
            return x

    return Stack(), (torch.randn(8, 16, 64, requires_grad=True),)


def apt_model(form: str | None, autopoietic: bool, layers: int = 2, d_model: int = 64, heads: int = 2,
              seq_len: int = 32, batch: int = 2) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """A decoder-only APT model (vocabulary 128, d_ff 4 d_model) with left-spin sites in ``form``
    (None: left-spin off); its embeddings frozen (no embedding backward)."""
    from apt_ext.model import APTModel, APTModelConfiguration

    cfg = APTModelConfiguration(vocab_size=128, d_model=d_model, num_heads=heads, d_ff=4 * d_model,
                                num_encoder_layers=0, num_decoder_layers=layers, decoder_only=True, dropout=0.0,
                                max_seq_len=seq_len, use_left_spin=form is not None, use_autopoietic=autopoietic,
                                left_spin_compiled_form=form or "op")
    model = APTModel(cfg).train()
    for emb in (model.tok_emb, model.pos_emb):  # their backward's index_put lowering needs a real CUDA device
        emb.weight.requires_grad_(False)
    return model, (torch.randint(0, 128, (batch, seq_len)),)


def partitioned_graphs(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, object, list]]:
    """[(kind "fw" / "bw", graph module, example inputs)] of one training step traced on the CPU
    under bf16 autocast, as inductor would receive them."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    graphs: list[tuple[str, object, list]] = []

    def capture(kind: str):
        def compiler(gm, example_inputs):
            graphs.append((kind, gm, list(example_inputs)))
            return make_boxed_func(gm.forward)
        return compiler

    def backend(gm, example_inputs):
        return aot_module_simplified(gm, example_inputs, fw_compiler=capture("fw"), bw_compiler=capture("bw"),
                                     decompositions=select_decomp_table(),
                                     partition_fn=min_cut_rematerialization_partition)

    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(model, backend=backend, fullgraph=True)(*inputs)
    out.float().sum().backward()
    return graphs


def _on_cuda(a):
    if isinstance(a, torch.device) and a.type == "cpu":
        return CUDA
    if isinstance(a, (list, tuple)):
        return type(a)(_on_cuda(v) for v in a)
    if isinstance(a, dict):
        return {k: _on_cuda(v) for k, v in a.items()}
    return a


def _fake_sm90() -> list:
    """Patches (not started) that answer torch.cuda's, dynamo's device interface's and Triton's
    driver queries as a compute capability 9.0 device would."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.driver import driver

    import torch._inductor.fx_passes.joint_graph as joint_graph
    import torch._inductor.scheduler as scheduler
    import torch.utils._triton as torch_triton
    from torch._dynamo.device_interface import CudaInterface

    target = GPUTarget("cuda", 90, 32)
    props = types.SimpleNamespace(name="sm_90 (fake)", major=9, minor=0, multi_processor_count=132,
                                  total_memory=80 * 2**30, max_threads_per_multi_processor=2048,
                                  regs_per_multiprocessor=65536, warp_size=32, L2_cache_size=50 * 2**20, gcnArchName="",
                                  shared_memory_per_block_optin=232448, max_shared_memory_per_block_optin=232448)

    class Driver:
        def get_current_target(self):
            return target

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, *args) -> int:
            return 0

    answers = {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
               "get_device_properties": lambda *a, **k: props, "get_device_capability": lambda *a, **k: (9, 0),
               "get_rng_state": lambda *a, **k: torch.zeros(16, dtype=torch.uint8),
               "set_rng_state": lambda *a, **k: None, "_lazy_init": lambda: None, "is_initialized": lambda: True,
               "_exchange_device": lambda i: 0, "_maybe_exchange_device": lambda i: 0, "set_device": lambda *a: None,
               "synchronize": lambda *a: None}
    patches = [mock.patch(f"torch.cuda.{k}", v) for k, v in answers.items()]
    for k in ("get_device_properties", "current_device", "device_count", "synchronize"):
        patches.append(mock.patch.object(CudaInterface, k, staticmethod(answers[k])))
    patches += [mock.patch.object(driver, "_active", Driver()),  # Triton's active driver, restored after
                mock.patch.object(CudaInterface.Worker, "get_device_properties",
                                  staticmethod(answers["get_device_properties"])),
                mock.patch.object(CudaInterface, "exchange_device", staticmethod(answers["_exchange_device"])),
                mock.patch.object(CudaInterface, "maybe_exchange_device",
                                  staticmethod(answers["_maybe_exchange_device"])),
                mock.patch.object(torch_triton, "triton_backend", lambda: make_backend(target)),
                mock.patch.object(scheduler, "has_triton", lambda: True),
                mock.patch.object(joint_graph, "lazy_init", lambda *a, **k: None),  # builds real CUDA tensors
                mock.patch("torch._inductor.config.compile_threads", 1),
                mock.patch("torch._inductor.config.benchmark_kernel", True),  # kernel_num_gb in each kernel
                mock.patch("torch._inductor.config.pattern_matcher", False)]
    return patches


def cuda_kernels(graphs: list[tuple[str, object, list]]) -> dict[str, str]:
    """{kernel name: source} inductor generates for the graphs on a fake sm_90 device. Each source
    carries its bytes read and written ('kernel_num_gb', inductor's estimate: kernel_gb)."""
    from torch._inductor import codecache
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    kernels: dict[str, str] = {}

    def load(key, path, *args, **kwargs):  # read the wrapper's kernels; never import it (no CUDA here)
        text = Path(path).read_text()
        for name, source in wrapper_kernels(text):
            # the forward's and the backward's wrappers number their kernels each from 0: keep both
            # of a name they share
            while name in kernels and kernels[name] != source:
                name += "_b"
            kernels[name] = source
        module = types.ModuleType("wrapper_not_loaded")
        module.call = lambda *a, **k: None
        module.__file__ = path
        return module

    mode = FakeTensorMode()
    with contextlib.ExitStack() as patched:  # every patch undone on the way out, also after an error
        for p in _fake_sm90() + [mock.patch.object(codecache.PyCodeCache, "load_by_key_path", staticmethod(load))]:
            patched.enter_context(p)
        for kind, gm, example_inputs in graphs:
            for node in gm.graph.nodes:
                node.args, node.kwargs = _on_cuda(node.args), _on_cuda(node.kwargs)
            gm.recompile()
            with mode:
                fakes = [FakeTensor(mode, torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta"), CUDA)
                         if isinstance(t, torch.Tensor) else t for t in example_inputs]
                compile_fx_inner(gm, fakes, is_backward=kind == "bw")
    return kernels


def wrapper_kernels(text: str) -> list[tuple[str, str]]:
    """(name, source) of each Triton kernel an inductor wrapper module defines."""
    return re.findall(r"async_compile\.triton\('(\w+)', '''(.*?)'''", text, re.S)


def kernel_loads(source: str) -> int | None:
    """How many tl.load calls inductor counted in a generated kernel (its meta's num_load; None if
    absent). Many loads in one reduction kernel spill registers or serialise its row loop."""
    m = re.search(r"'num_load': (\d+)", source)
    return int(m.group(1)) if m else None


def kernel_gb(source: str) -> float:
    """Inductor's estimate of the gigabytes a generated kernel reads and writes (0 if absent)."""
    m = re.search(r"'kernel_num_gb': ([0-9.eE+-]+)", source)
    return float(m.group(1)) if m else 0.0


def compile_each(paths: list[Path], triton_path: str | None) -> dict[str, str]:
    """{file name: "ok" or the failure's last line} from tools/triton_kernel_repro.py per kernel,
    with ``triton_path`` first on the child's path."""
    env = dict(os.environ)
    if triton_path:
        env["PYTHONPATH"] = triton_path + os.pathsep + env.get("PYTHONPATH", "")
    results = {}
    for path in paths:
        r = subprocess.run([sys.executable, str(HERE / "triton_kernel_repro.py"), str(path)], env=env,
                           capture_output=True, text=True)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        results[path.name] = "ok" if r.returncode == 0 else (lines[-1] if lines else f"exit {r.returncode}")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["left-spin-stack", "apt-model"], default="left-spin-stack")
    ap.add_argument("--form", choices=["op", "decomposed", "off"], default="decomposed",
                    help="left-spin compiled form (apt-model: off turns left-spin off)")
    ap.add_argument("--autopoietic", action="store_true", help="apt-model: with autopoietic attention")
    ap.add_argument("--size", default="2,64,2,32,2", metavar="L,D,H,T,B",
                    help="apt-model: layers, d_model, heads, sequence length, batch (default 2,64,2,32,2; "
                         "GPT-2-small's layer: 1,768,12,1024,8)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the kernels' files")
    ap.add_argument("--triton-path", help="a folder with the Triton to compile with (default: the installed one)")
    ap.add_argument("--no-compile", action="store_true", help="only write the kernels")
    a = ap.parse_args()
    if a.triton_path and not (Path(a.triton_path) / "triton").is_dir():
        ap.error(f"--triton-path: no triton package under {a.triton_path}")
    try:
        layers, d_model, heads, seq_len, batch = (int(v) for v in a.size.split(","))
    except ValueError:
        ap.error(f"--size: expected five integers L,D,H,T,B, got {a.size!r}")
    if a.target == "left-spin-stack" and a.form == "off":
        ap.error("--form off: only for --target apt-model")
    torch.manual_seed(0)
    if a.target == "left-spin-stack":
        model, inputs = left_spin_stack(a.form)
    else:
        model, inputs = apt_model(None if a.form == "off" else a.form, a.autopoietic, layers, d_model, heads,
                                  seq_len, batch)
    kernels = cuda_kernels(partitioned_graphs(model, inputs))
    a.out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, source in sorted(kernels.items()):
        paths.append(a.out / f"{name}.py")
        paths[-1].write_text(source)
    total_gb = sum(kernel_gb(src) for src in kernels.values())
    print(f"{len(paths)} kernels written to {a.out}; inductor's estimate of their traffic: {total_gb * 1e3:.1f} MB "
          "per step (its own kernels; matmuls and custom ops not included)")
    if a.no_compile:
        return 0
    results = compile_each(paths, a.triton_path)
    for name, res in results.items():
        print(f"{res[:100]:<100}  {name[:90]}")
    failed = [n for n, r in results.items() if r != "ok"]
    print(f"{len(results) - len(failed)} of {len(results)} compiled for sm_90")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
