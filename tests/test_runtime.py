"""drat/runtime.py: the collector stays out of timed and training steps, on a schedule, and
is always handed back as it was found."""

import gc

import pytest

from drat.measure import interleaved_step_ms, measure_steps
from drat.runtime import ScheduledGC, gc_paused
from drat.strategies import FullAC, NoneAC

from .conftest import make_batch, make_model


@pytest.fixture(autouse=True)
def _collector_back_on():
    yield
    gc.enable()  # a failing test must not leave the rest of the session without a collector


def test_gc_paused_pauses_inside_and_restores_the_state_it_found():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off before: it stays off


def test_scheduled_gc_collects_young_objects_every_n_steps_only():
    seen = []

    def watch(phase, info):
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        with ScheduledGC(every_steps=3) as sgc:
            assert not gc.isenabled()
            seen.clear()
            for step in range(1, 10):
                _ = [[i] for i in range(2000)]  # garbage the automatic collector would chase
                sgc.step(step)
            assert sgc.passes == 3  # steps 3, 6, 9
            assert seen == [1, 1, 1]  # only the scheduled young-generation passes ran
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(watch)


def test_scheduled_gc_of_zero_leaves_the_automatic_collector_alone():
    with ScheduledGC(0) as sgc:
        assert gc.isenabled()
        sgc.step(10)
        assert sgc.passes == 0
    assert gc.isenabled()
    with pytest.raises(ValueError, match=">= 0"):
        ScheduledGC(-1)


def test_timed_steps_run_with_the_collector_paused_and_say_so():
    """Every forward of a timed step sees the automatic collector off, and it is on afterwards."""
    model = make_model(n_layer=2)
    idx, tgt = make_batch()
    seen = []
    forward = model.forward

    def watched(*a, **kw):
        seen.append(gc.isenabled())
        return forward(*a, **kw)

    model.forward = watched
    model.set_strategy(FullAC())
    m = measure_steps(model, idx, tgt, steps=2, warmup=1)
    assert m["gc_paused"] is True and len(m["step_ms_all"]) == 2
    assert seen == [False] * 3 and gc.isenabled()
    seen.clear()
    assert len(interleaved_step_ms(model, idx, tgt, [NoneAC(), FullAC()], steps=2, warmup=1)) == 2
    assert seen == [False] * 6 and gc.isenabled()
