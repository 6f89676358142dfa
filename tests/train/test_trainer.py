"""drat.train (the trainer, its run folder and outputs) and the `drat train | eval | generate | tokenizer`
commands, on tiny CPU runs."""

import json
import math
import sys

import pytest
import torch

from drat.cli import main
from drat.gates import BudgetInfeasibleError, GateBank
from drat.strategies import DRATGates, NoneAC
from drat.train import ResourceAwareTrainer, TrainingConfig, TrainingError
from drat.train.checkpoint import save_checkpoint
from drat.train.optim import lr_multiplier

from ..conftest import make_batch, make_model
from .conftest import CORPUS_BYTES

TIMING_KEYS = {"step_ms", "tokens_per_s"}


def small_cfg(out, tokenizer_path, **kw) -> TrainingConfig:
    base = dict(corpus="stdlib", max_corpus_bytes=CORPUS_BYTES, tokenizer=str(tokenizer_path), seq_len=32,
                batch_size=4, n_layer=2, n_embd=32, n_head=4, steps=6, log_every=1, eval_every=3,
                eval_batches=2, ckpt_every=3, device="cpu", out=str(out), dropout=0.1,
                cost_model="activation_size", tensorboard=False)
    base.update(kw)
    return TrainingConfig(**base)


def run(cfg, resume=None, overwrite=False, stop_after=None) -> dict:
    trainer = ResourceAwareTrainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.train(stop_after=stop_after)
    finally:
        trainer.close()


def records(out, kind="train") -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------- resume
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, tokenizer_path):
    # grad_accum, dropout and drat gates: every piece of state a resume must restore is in play
    kw = dict(grad_accum=2, keep_last_k=2)
    straight = small_cfg(tmp_path / "straight", tokenizer_path, **kw)
    run(straight)
    split = small_cfg(tmp_path / "split", tokenizer_path, **kw)
    first = run(split, stop_after=3)
    assert first["step"] == 3 and not first["finished"]
    run(split, resume="latest")

    a, b = records(tmp_path / "straight"), records(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]  # nothing duplicated or lost by the resume
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact float equality
    for ra, rb in zip(a, b):  # λ, τ, lr, gate probabilities and samples, resource loss: all bitwise
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in rb.items() if k not in TIMING_KEYS}
    assert records(tmp_path / "straight", "eval") == records(tmp_path / "split", "eval")
    ckpts = sorted(p.name for p in (tmp_path / "split" / "checkpoints").glob("ckpt_*.pt"))
    assert ckpts == ["ckpt_0000003.pt", "ckpt_0000006.pt"]


def test_a_run_written_before_a_config_field_existed_still_resumes(tmp_path, tokenizer_path):
    """A stored config (config.json, checkpoint) without a newer field means that field's default:
    adding a TrainingConfig field must not make older runs unresumable."""
    cfg = small_cfg(tmp_path / "old", tokenizer_path, steps=4, ckpt_every=2)
    run(cfg, stop_after=2)
    stored = json.loads((tmp_path / "old" / "config.json").read_text())
    del stored["training"]["deterministic"]  # as written before the field existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(stored))
    ckpt = tmp_path / "old" / "checkpoints" / "ckpt_0000002.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["deterministic"]
    save_checkpoint(state, ckpt.parent, state["step"])  # rewritten, with its digest
    assert run(cfg, resume="latest")["finished"]


def test_resume_discards_metrics_logged_after_the_checkpoint(tmp_path, tokenizer_path):
    cfg = small_cfg(tmp_path / "r", tokenizer_path, ckpt_every=2)
    run(cfg, stop_after=3)  # checkpoints at 2 and 3; then pretend 3 never got saved
    (tmp_path / "r" / "checkpoints" / "ckpt_0000003.pt").unlink()
    run(cfg, resume="latest")
    assert [r["step"] for r in records(tmp_path / "r")] == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- exactness
def test_recompute_heavy_training_writes_the_losses_of_store_all(tmp_path, tokenizer_path, capsys):
    common = ["train", "--corpus", "stdlib", "--max-corpus-bytes", CORPUS_BYTES,
              "--tokenizer", tokenizer_path, "--size", "tiny", "--layers", 2, "--hidden", 32, "--heads", 4,
              "--seq-len", 32,
              "--batch-size", 4, "--steps", 5, "--seed", 3, "--device", "cpu", "--dropout", 0.1,
              "--log-every", 1, "--eval-every", 5, "--eval-batches", 1, "--no-tensorboard"]
    assert cli(capsys, *common, "--strategy", "none", "--out", tmp_path / "none")[0] == 0
    assert cli(capsys, *common, "--strategy", "full", "--out", tmp_path / "full")[0] == 0
    rc, out, _ = cli(capsys, *common, "--strategy", "drat", "--lambda", 1000, "--gate-init-logit", -1,
                     "--cost-model", "activation_size", "--out", tmp_path / "drat")
    assert rc == 0 and json.loads(out)["step"] == 5
    none, full, drat = (records(tmp_path / d) for d in ("none", "full", "drat"))
    assert [r["loss"] for r in none] == [r["loss"] for r in drat] == [r["loss"] for r in full]
    n_sites = len(drat[0]["gates"])
    assert all(r["n_stored"] <= n_sites // 2 for r in drat)  # the gates really recomputed
    assert drat[-1]["saved_activation_bytes"] < 0.5 * none[-1]["saved_activation_bytes"]
    assert records(tmp_path / "none", "eval") == records(tmp_path / "drat", "eval")


def test_pinned_plan_is_what_the_forward_executes_and_is_exact():
    model = make_model(dropout=0.1)
    idx, tgt = make_batch()
    torch.manual_seed(0)
    ref = model(idx, tgt).item()
    gates = GateBank(len(model.graph), init_logit=0.0, seed=1)
    strat = DRATGates(gates, sample=True)
    model.set_strategy(strat)
    st = gates.sample_st()
    strat.pin(st)
    state = gates.generator.get_state()
    torch.manual_seed(0)
    assert model(idx, tgt).item() == ref
    assert strat.last_runtime.stored == [bool(v) for v in (st > 0.5).tolist()]
    assert torch.equal(gates.generator.get_state(), state)  # pinned: no new sample drawn
    strat.pin(None)
    strat.decisions(model)
    assert not torch.equal(gates.generator.get_state(), state)
    with pytest.raises(ValueError, match="pinned plan has 3 decisions"):
        strat.pin(torch.ones(3))
    model.set_strategy(NoneAC())


# ----------------------------------------------------------------------------- outputs
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tokenizer_path):
    out = tmp_path_factory.mktemp("run") / "r"
    torch.set_num_threads(1)
    cfg = small_cfg(out, tokenizer_path, steps=30, lr=3e-3, warmup=3, eval_every=10, eval_batches=4,
                    ckpt_every=10, keep_last_k=2, tensorboard=True, lam=0.5, tau_end=0.1)
    return out, cfg, run(cfg)


def test_run_folder_contract(finished_run):
    out, cfg, summary = finished_run
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["training"] == cfg.to_dict()
    assert resolved["model"]["n_layer"] == 2 and resolved["model"]["vocab_size"] == 300
    assert resolved["derived"]["warmup_steps"] == 3 and len(resolved["sites"]) == 2 * 8 + 3
    assert "val loss" in (out / "train.log").read_text()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    kept = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert kept == ["ckpt_0000020.pt", "ckpt_0000030.pt"]  # keep_last_k=2

    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 30
    assert summary["tokens_seen"] == 30 * 4 * 32
    assert summary["wall_time_s"] > 0 and summary["provenance"]["torch_version"] == torch.__version__
    assert summary["config"] == resolved
    assert len(summary["final_plan"]["stored"]) == len(resolved["sites"])


def test_metrics_records(finished_run):
    out, cfg, summary = finished_run
    train, evals = records(out), records(out, "eval")
    assert [r["step"] for r in train] == list(range(1, 31))
    assert [r["step"] for r in evals] == [0, 10, 20, 30]
    assert evals[-1]["val_loss"] == summary["final_val_loss"]
    assert math.isclose(summary["final_val_ppl"], math.exp(summary["final_val_loss"]))
    for r in train:
        assert set(r["gates"]) == set(json.loads((out / "config.json").read_text())["sites"])
        assert all(0.0 <= g["p_store"] <= 1.0 for g in r["gates"].values())
        assert r["n_stored"] == sum(g["stored"] for g in r["gates"].values())
        assert r["tokens_per_s"] > 0 and r["step_ms"] > 0 and r["saved_activation_bytes"] >= 0
        assert r["lam"] == 0.5
    # schedules: warm-up then cosine to min_lr; τ annealed from tau_start to tau_end
    lrs = [r["lr"] for r in train]
    assert lrs[0] == pytest.approx(cfg.lr / 3) and max(lrs) == pytest.approx(cfg.lr)
    assert lrs[-1] == pytest.approx(cfg.lr * lr_multiplier(29, 3, 30, cfg.min_lr / cfg.lr))
    assert train[0]["tau"] == pytest.approx(1.0) and train[-1]["tau"] == pytest.approx(0.1)
    # a recomputed site's bytes leave the plan: fewer stored sites, fewer saved bytes
    lo, hi = min(train, key=lambda r: r["n_stored"]), max(train, key=lambda r: r["n_stored"])
    assert lo["n_stored"] == hi["n_stored"] or lo["saved_activation_bytes"] < hi["saved_activation_bytes"]


def test_training_lowers_validation_loss(finished_run):
    _, _, summary = finished_run
    assert summary["final_val_loss"] < summary["initial_val_loss"] - 0.3


def test_eval_and_generate_from_a_checkpoint(finished_run, capsys):
    out, _, summary = finished_run
    ckpt = out / "checkpoints" / "ckpt_0000030.pt"
    rc, stdout, _ = cli(capsys, "eval", "--ckpt", ckpt, "--max-batches", 4)
    res = json.loads(stdout)
    assert rc == 0 and res["step"] == 30
    assert res["val"]["loss"] == pytest.approx(summary["final_val_loss"], abs=1e-6)  # same batches
    assert math.isfinite(res["test"]["loss"])
    assert res["test"]["ppl"] == pytest.approx(math.exp(res["test"]["loss"]))

    texts = [cli(capsys, "generate", "--ckpt", ckpt, "--prompt", "def ", "--tokens", 20, "--seed", s)[1]
             for s in (1, 1, 2)]
    assert texts[0].startswith("def ") and len(texts[0]) > len("def ") + 5
    assert texts[0] == texts[1] != texts[2]  # the seed decides the sample


def test_budget_mode_raises_lambda_until_the_plan_fits(tmp_path, tokenizer_path):
    probe = small_cfg(tmp_path / "probe", tokenizer_path, steps=1, strategy="none")
    trainer = ResourceAwareTrainer(probe)
    floor_bytes = trainer.model.num_params() * 16  # params + grads + 2 AdamW moments, fp32
    store_all_bytes = sum(trainer.site_bytes)
    trainer.close()
    budget_gib = (floor_bytes + 0.4 * store_all_bytes) / 2**30
    cfg = small_cfg(tmp_path / "b", tokenizer_path, steps=40, budget_gib=budget_gib, gate_init_logit=1.0,
                    gate_lr=0.2, ckpt_every=0, eval_every=40, gate_warm_start=False)
    run(cfg)
    train = records(tmp_path / "b")
    assert train[0]["lam"] == 0.0 and max(r["lam"] for r in train) > 0  # dual ascent priced memory
    assert train[0]["saved_activation_bytes"] > 0.4 * store_all_bytes
    assert train[-1]["saved_activation_bytes"] < train[0]["saved_activation_bytes"]
    assert train[-1]["mem_frac"] < train[0]["mem_frac"]

    # warm start: the gates begin at the cost model's plan, which already fits the budget
    warm = small_cfg(tmp_path / "warm", tokenizer_path, steps=10, budget_gib=budget_gib, ckpt_every=0,
                     eval_every=10)
    run(warm)
    first = records(tmp_path / "warm")[0]
    assert first["saved_activation_bytes"] <= 0.4 * store_all_bytes
    assert first["n_stored"] < len(first["gates"])

    low = small_cfg(tmp_path / "low", tokenizer_path, budget_gib=0.5 * floor_bytes / 2**30)
    with pytest.raises(BudgetInfeasibleError, match="below the feasible floor"):
        ResourceAwareTrainer(low).close()


def test_budget_closes_on_the_measured_peak(tmp_path, tokenizer_path):
    """What CUDA steps measure beyond the plan's activations comes off the activation target
    (the arithmetic of a CUDA step's budget branch, driven by hand on the CPU)."""
    probe = small_cfg(tmp_path / "probe", tokenizer_path, steps=1, strategy="none")
    trainer = ResourceAwareTrainer(probe)
    total = sum(trainer.site_bytes)
    trainer.close()
    budget_bytes = 1.5 * total
    cfg = small_cfg(tmp_path / "c", tokenizer_path, steps=1, budget_gib=budget_bytes / 2**30, ckpt_every=0)
    trainer = ResourceAwareTrainer(cfg)
    try:
        frac0 = trainer.gating.budget_frac()
        # a step held 0.8·total beyond a plan that kept 0.5·total: 0.7·total is left for activations
        assert trainer.gating.close_budget_on_peak(1.3 * total, 0.5 * total) == pytest.approx(0.7)
        assert trainer.gating.budget.other_bytes == pytest.approx(0.8 * total)
        # a later, leaner step does not loosen the target; a heavier one tightens it
        assert trainer.gating.close_budget_on_peak(0.9 * total, 0.5 * total) == pytest.approx(0.7)
        assert trainer.gating.close_budget_on_peak(1.5 * total, 0.4 * total) == pytest.approx(0.4)
        # more than the budget outside the plan: nothing left, dual ascent pushes λ up
        assert trainer.gating.close_budget_on_peak(3.0 * total, 0.0) == 0.0
        assert frac0 > 0
    finally:
        trainer.close()


def test_budget_loop_counts_the_lm_heads_peak_saving_as_the_gates_do(tmp_path, tokenizer_path):
    """On CUDA the cost table charges the LM head the measured drop of the peak when it is
    recomputed, less than the bytes it owns. The training budget loop counts the same bytes,
    so that the head's rebuild transient does not stay in `other_bytes` (driven by hand here)."""
    probe = small_cfg(tmp_path / "probe", tokenizer_path, steps=1, strategy="none")
    trainer = ResourceAwareTrainer(probe)
    total = sum(trainer.site_bytes)
    trainer.close()
    cfg = small_cfg(tmp_path / "c", tokenizer_path, steps=1, budget_gib=1.5 * total / 2**30, ckpt_every=0)
    trainer = ResourceAwareTrainer(cfg)
    try:
        assert trainer.gating.peak_site_bytes() == trainer.site_bytes  # CPU: no peak-aware table
        head = trainer.model.graph.idx(None, "lm_head_loss")
        gap = 0.25 * trainer.site_bytes[head]  # what the head's rebuild keeps on top of the peak
        costs = trainer.gating.costs
        costs.owned_bytes = list(costs.mem_bytes)
        costs.mem_bytes[head] -= gap
        site = trainer.gating.peak_site_bytes()
        assert site[head] == pytest.approx(trainer.site_bytes[head] - gap)
        assert [b for i, b in enumerate(site) if i != head] == [
            b for i, b in enumerate(trainer.site_bytes) if i != head]
        frac = trainer.gating.close_budget_on_peak(1.3 * total, 0.5 * total)
        assert frac == pytest.approx((1.5 * total - 0.8 * total) / (total - gap))
    finally:
        trainer.close()


def test_wandb_missing_is_skipped_with_a_warning(tmp_path, tokenizer_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    summary = run(small_cfg(tmp_path / "w", tokenizer_path, steps=1, wandb=True))
    assert summary["finished"]
    assert "wandb is not installed" in (tmp_path / "w" / "train.log").read_text()


# ----------------------------------------------------------------------------- config and CLI
def test_config_file_with_flag_overrides(tmp_path, tokenizer_path, capsys):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        f"corpus: stdlib\nmax-corpus-bytes: {CORPUS_BYTES}\ntokenizer: {tokenizer_path}\nn_layer: 2\n"
        "n_embd: 32\nn_head: 4\nseq_len: 16\nbatch_size: 2\nsteps: 4\nlam: 0.2\ndevice: cpu\n"
        "tensorboard: false\neval_batches: 1\n")
    rc, out, _ = cli(capsys, "train", "--config", cfg_file, "--steps", 2, "--budget-gib", 1.0,
                     "--out", tmp_path / "o")
    assert rc == 0 and json.loads(out)["step"] == 2
    got = json.loads((tmp_path / "o" / "config.json").read_text())["training"]
    assert got["steps"] == 2 and got["batch_size"] == 2 and got["seq_len"] == 16  # flag wins, file fills
    assert got["budget_gib"] == 1.0 and got["lam"] is None  # a given --budget-gib replaces the file's λ

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    rc, _, err = cli(capsys, "train", "--config", bad, "--out", tmp_path / "o2")
    assert rc == 2 and "unknown training config key(s) stepz" in err


def test_out_folder_holding_a_run_needs_resume_or_overwrite(tmp_path, tokenizer_path, capsys):
    cfg = small_cfg(tmp_path / "o", tokenizer_path, steps=2, ckpt_every=0)
    run(cfg)
    with pytest.raises(TrainingError, match="already holds a run"):
        ResourceAwareTrainer(cfg)
    with pytest.raises(TrainingError, match=r"different config \(lr: 0.001 -> 0.5\)"):
        ResourceAwareTrainer(small_cfg(tmp_path / "o", tokenizer_path, steps=2, lr=0.5), resume="latest")
    # --overwrite starts afresh: the same metrics as a first run, not appended ones
    first = (tmp_path / "o" / "metrics.jsonl").read_text()
    run(cfg, overwrite=True)
    assert [r["loss"] for r in records(tmp_path / "o")] == [json.loads(x)["loss"] for x in first.splitlines()
                                                           if '"train"' in x]
    # resuming a finished run with more steps continues it
    summary = run(small_cfg(tmp_path / "o", tokenizer_path, steps=3, ckpt_every=0), resume="latest")
    assert summary["step"] == 3 and [r["step"] for r in records(tmp_path / "o")] == [1, 2, 3]
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "o", "--steps", 4)
    assert rc == 2 and "--resume" in err and "--overwrite" in err


def test_tokenizer_train_command(tmp_path, capsys):
    rc, out, _ = cli(capsys, "tokenizer", "train", "--corpus", "stdlib", "--max-corpus-bytes", 50_000,
                     "--vocab-size", 400, "--out", tmp_path / "tok.json")
    res = json.loads(out)
    assert rc == 0 and res["vocab_size"] <= 400 and (tmp_path / "tok.json").is_file()


@pytest.fixture
def tiny_text_corpus(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    for i in range(4):
        (d / f"doc{i}.txt").write_text(f"tiny document number {i}.\n")
    return d


@pytest.mark.parametrize("argv, message", [
    (["--size", "huge"], "unknown model size 'huge'"),
    (["--corpus", "nonsense"], "unknown corpus spec 'nonsense'"),
    (["--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
    (["--strategy", "magic"], "unknown strategy 'magic'"),
    (["--strategy", "none", "--lambda", "0.1"], "apply to strategy drat only"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--vocab-size", "512"], "has 300 tokens but vocab_size=512"),
    (["--corpus", "text:{texts}", "--tokenizer", None], "too small for one batch"),
    (["--budget-gib", "1e-9"], "below the feasible floor"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, tokenizer_path, tiny_text_corpus, capsys, monkeypatch,
                                          argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = {"--corpus": "stdlib", "--max-corpus-bytes": str(CORPUS_BYTES), "--tokenizer": str(tokenizer_path),
            "--layers": "2", "--hidden": "32", "--heads": "4", "--seq-len": "32", "--batch-size": "4",
            "--steps": "2", "--device": "cpu", "--vocab-size": None, "--out": str(tmp_path / "o")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = None if value is None else value.format(texts=tiny_text_corpus)
    if base["--tokenizer"] is None:
        base["--vocab-size"] = "300"
    args = [x for flag, v in base.items() if v is not None for x in (flag, v)]
    rc, out, err = cli(capsys, "train", *args, "--no-tensorboard")
    assert rc == 2 and out == ""
    errors = [line for line in err.splitlines() if "error" in line]  # progress lines may precede it
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    assert errors[0].startswith("drat: error: ") and message in errors[0], err


def test_resume_without_a_run_or_checkpoint_is_refused(tmp_path, tokenizer_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        ResourceAwareTrainer(small_cfg(tmp_path / "empty", tokenizer_path), resume="latest")


def test_deterministic_mode_is_recorded_same_losses_and_undone_on_close(tmp_path, tokenizer_path):
    """`deterministic` switches process-wide flags for the run and puts them back at close; on
    the CPU (deterministic anyway) it changes no number."""
    assert not torch.are_deterministic_algorithms_enabled()
    cfg = small_cfg(tmp_path / "det", tokenizer_path, steps=3, ckpt_every=0, deterministic=True)
    trainer = ResourceAwareTrainer(cfg)
    try:
        assert torch.are_deterministic_algorithms_enabled()
        # strict: attention backwards take their deterministic path only then (set_deterministic)
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        trainer.train()
    finally:
        trainer.close()
    assert not torch.are_deterministic_algorithms_enabled()
    run(small_cfg(tmp_path / "plain", tokenizer_path, steps=3, ckpt_every=0))
    assert [r["loss"] for r in records(tmp_path / "det")] == [r["loss"] for r in records(tmp_path / "plain")]
    stored = json.loads((tmp_path / "det" / "config.json").read_text())
    assert stored["training"]["deterministic"] is True


# ----------------------------------------------------------------------------- GPU (skipped on CI)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kw", [dict(strategy="drat", lam=0.5), dict(strategy="drat", budget_gib=1.0)])
def test_gated_train_step_never_waits_for_the_gpu(tmp_path, tokenizer_path, kw):
    """A DRAT step decides its plan on the host: a GPU→CPU sync inside it stalls the launch
    queue, which on the launch-bound H200 cost a store-all run 10-30% step time (measured on the
    paper's grid). The gates, their optimizer and the costs live on the CPU, so the step is sync-free."""
    cfg = small_cfg(tmp_path / "run", tokenizer_path, device="cuda", steps=4, log_every=100, eval_every=100,
                    ckpt_every=0, dropout=0.0, grad_clip=1.0, **kw)
    trainer = ResourceAwareTrainer(cfg)
    try:
        trainer.train_step()  # first step: allocator warm-up, lazy inits
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step()
            trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert trainer.gating.gates.logits.device.type == "cpu"
    finally:
        trainer.close()


def test_training_pauses_the_collector_on_a_schedule_and_gives_it_back(tmp_path, tokenizer_path):
    """Steps run with the automatic collector off and a young pass every gc_every_steps; the
    collector is on again afterwards, the setting may change on resume, and a negative one is
    refused."""
    import gc

    from drat.train import trainer as train_mod

    passes = []
    orig = train_mod.ScheduledGC.step

    def spy(self, step):
        assert not gc.isenabled()  # inside the loop the automatic collector is off
        orig(self, step)
        passes.append(self.passes)

    train_mod.ScheduledGC.step = spy
    try:
        cfg = small_cfg(tmp_path / "g", tokenizer_path, steps=4, gc_every_steps=2, ckpt_every=2)
        run(cfg, stop_after=2)
        run(small_cfg(tmp_path / "g", tokenizer_path, steps=4, gc_every_steps=3, ckpt_every=2),
            resume="latest")
    finally:
        train_mod.ScheduledGC.step = orig
    assert passes == [0, 1, 1, 1]  # steps 1, 2 (every 2), then 3 (every 3), 4
    assert gc.isenabled()
    with pytest.raises(TrainingError, match="gc_every_steps"):
        small_cfg(tmp_path / "bad", tokenizer_path, gc_every_steps=-1)
