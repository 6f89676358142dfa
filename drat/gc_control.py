"""Python's garbage collector, kept out of the timed and training steps.

A step that recomputes builds and drops many Python objects (hook closures, the rebuilds' autograd
nodes), and CPython's automatic collector runs whenever enough of them have piled up: 70 passes
in 10 `full` steps of `large` on the H200's host, against 1 for `none` (session 7,
results/bench/drift_s7). A full (generation-2) pass walks every tracked object; with a `large`
model built that is ~200k objects and 40–70 ms on our CPU host, longer than a whole step on the
GPU. Landing in some steps and not others, such pauses are one suspect for the 9–44% spread
within the rows that recompute (README, "The paper's profile configuration").

So, as torchtitan does in training: the automatic collector is paused while steps run, and a
young-generation collection runs on a fixed schedule instead (`ScheduledGC`); timed benchmark
steps run with it paused throughout (`gc_paused`). Reference counting still frees almost
everything at once (tensors, graphs); only reference cycles wait for the next scheduled pass.
"""

from __future__ import annotations

import contextlib
import gc


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
