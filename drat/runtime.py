"""Where and how steps run: the device, autocast, deterministic kernels, and Python's collector.

Everything here is process state that the mechanism, the benchmarks and the trainer share, kept in
one low-level module so that none of them has to import another to reach it.

Python's garbage collector is kept out of timed and training steps. A step that recomputes builds
and drops many Python objects (hook closures, the rebuilds' autograd nodes), and CPython's automatic
collector runs whenever enough of them have piled up: in 10 `full` steps of `large` it ran 70
times, against once for `none`. A full (generation-2) pass walks every tracked object; with a
`large` model built that is about 200k objects and 40-70 ms on a CPU host, longer than a whole GPU
step. Landing in some steps and not others, such pauses widen the spread of step times.

So, as torchtitan does in training, the automatic collector is paused while steps run and a
young-generation collection runs on a fixed schedule instead (`ScheduledGC`); timed benchmark steps
run with it paused throughout (`gc_paused`). Reference counting still frees almost everything at
once (tensors, graphs); only reference cycles wait for the next scheduled pass.
"""

from __future__ import annotations

import contextlib
import gc
import os
import warnings

import torch


@contextlib.contextmanager
def gc_paused():
    """Collect everything now, then keep the automatic collector off inside the block."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ScheduledGC:
    """The training loop's collector: off between scheduled passes, a generation-1 pass (young
    objects only: milliseconds) every `every_steps` steps. `every_steps=0` leaves Python's
    automatic collector as it is. What survives a pass moves to the oldest generation, which is
    only collected when the loop ends (the collector back on): reference cycles that live that
    long stay until then. The steps make almost none (tensors and autograd graphs are freed by
    reference counting), and torchtitan runs the same schedule.

        with ScheduledGC(50) as sgc:
            for step in ...:
                train_step()
                sgc.step(step)
    """

    def __init__(self, every_steps: int):
        if every_steps < 0:
            raise ValueError(f"every_steps must be >= 0 (0: automatic collection), got {every_steps}")
        self.every_steps = every_steps
        self.passes = 0
        self._was_enabled: bool | None = None

    def __enter__(self) -> ScheduledGC:
        if self.every_steps:
            self._was_enabled = gc.isenabled()
            gc.collect()  # start clean: what setup left behind is not carried into the steps
            gc.disable()
        return self

    def step(self, step: int) -> None:
        if self.every_steps and step % self.every_steps == 0:
            gc.collect(1)
            self.passes += 1

    def __exit__(self, *exc) -> None:
        if self.every_steps and self._was_enabled:
            gc.enable()


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N', with a clear error where no GPU is present."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but this machine has no CUDA GPU (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; use cpu or cuda")
    return torch.device(name)


def autocast_ctx(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 on CPU (the CPU is where exactness is tested)."""
    if device.type == "cuda":
        return torch.autocast("cuda", torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def set_deterministic():
    """Ask for deterministic kernels (TrainingConfig.deterministic); returns the undo.

    Strict (warn_only=False), because warn_only is not "deterministic where possible": PyTorch's
    attention backwards (flash, cuDNN, memory-efficient) read the flag and take their
    deterministic path only when it is strict; under warn_only they warn and stay
    non-deterministic. Measured on the H200 (results/bench/exactness_small_h200_det_warn_only): with
    warn_only, two identical `none` steps still differed in 49 gradients. An op that has no
    deterministic implementation then stops the run with PyTorch's error naming it. cuBLAS reads
    its workspace setting when its handle is created: set here, before the model touches the GPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized() \
            and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        warnings.warn("CUDA was initialised before `deterministic` took effect: set "
                      "CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment for deterministic cuBLAS",
                      stacklevel=2)
    given = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if given is not None and given not in (":4096:8", ":16:8"):
        raise ValueError(f"deterministic: CUBLAS_WORKSPACE_CONFIG={given!r} makes cuBLAS "
                            "non-deterministic (strict mode would stop at the first matmul); unset it or "
                            "set it to :4096:8 or :16:8")
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

    def restore() -> None:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]

    return restore
