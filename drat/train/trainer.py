"""Training a GPT whose store/recompute gates learn alongside it (or under a baseline strategy).

    cfg = TrainingConfig(size="tiny", corpus="stdlib", steps=200, strategy="drat", lam=0.05, out="runs/x")
    summary = ResourceAwareTrainer(cfg).train()

One optimizer step (`train_step`) under `strategy="drat"`:
  1. `_choose_plan`: anneal τ, draw one straight-through sample `st` of the gates and pin its hard
     part on the model (under torchrun: rank 0's), so the forward executes the very plan whose
     cost the gates are trained on (`gating.py`);
  2. `_forward_backward`: the task loss over `grad_accum` micro-batches. The gates change what
     autograd keeps, never what the model computes, so these gradients are bitwise those of `none`;
  3. backward the resource term `resource_loss(st, costs, λ)`: the gates' only gradient;
  4. `_optimizer_step`: clip the model's gradients, AdamW and LR schedule steps; then the gates'
     own AdamW step and, in budget mode, dual ascent on λ.

Resume is exact: batches are a pure function of (seed, step), and a checkpoint carries every other
piece of state the next step reads (weights, AdamW moments, schedule, gate logits and their
generator, λ, the site costs, each rank's CPU/CUDA RNG that drives dropout). On the CPU a run
resumed from step k writes bitwise the losses of an uninterrupted run.

Under torchrun (`distributed="ddp"` or `"fsdp"`, see `distributed.py`) every rank runs the same
steps on its own slice of the global batch (batch_size × grad_accum × world size); rank 0 writes
the run folder and the checkpoints, the gates stay replicated outside the wrapped model.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..accounting import saved_activation_bytes
from ..costs import SiteCosts, link_utilisation, model_state_bytes
from ..gates import budget_to_activation_bytes
from ..measure import build_costs, measure_link, measure_site_bytes, nominal_link
from ..model import GPT
from ..provenance import provenance
from ..runtime import ScheduledGC, autocast_ctx, set_deterministic
from ..strategies import make_strategy
from .checkpoint import (
    CHECKPOINT_DIR,
    check_resumable,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_trainer,
    save_checkpoint,
    trainer_state,
)
from .config import TrainingConfig, TrainingDiverged, TrainingError, build_model
from .distributed import full_tensor, grad_sync, init_distributed, set_block_resharding, wrap_model
from .gating import GateTraining, configured_lam
from .inference import evaluate_loss
from .inputs import MIN_VOCAB_SIZE, plan_inputs, prepare_inputs, write_inputs
from .metrics import MFU, MetricSinks, ProgressLine
from .optim import build_optimizer, lr_multiplier
from .run_folder import check_run_folder, discard_after, make_run_folder, setup_logging, write_json_atomic


def _rank_seed(seed: int, rank: int) -> int:
    """The dropout seed of rank > 0: unrelated to the streams of other seeds and ranks."""
    digest = hashlib.sha256(f"drat-rank\x00{seed}\x00{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class ResourceAwareTrainer:
    """Trains `GPT` with DRAT gates (or a baseline strategy); see the module docstring. Read top to
    bottom: the loop, one step, metrics, checkpoints, then the set-up that builds what they use."""

    def __init__(self, cfg: TrainingConfig, resume: str | None = None, overwrite: bool = False,
                 tokens_from: str | None = None, allow_unverified: bool = False):
        """`resume`: None, "latest" (newest checkpoint in cfg.out) or a checkpoint path.
        `tokens_from`: a folder of token files to link into a new run's tokens/.
        `allow_unverified`: resume from a checkpoint that has no .sha256 beside it (with a warning)."""
        cfg.validate()
        self.cfg, self.out = cfg, Path(cfg.out)
        self.dist, self._sinks, self._handlers = None, None, []
        self.allow_unverified, self._warnings = allow_unverified, []
        self._restore_determinism = set_deterministic() if cfg.deterministic else None
        try:
            self.dist, self.device = init_distributed(cfg.distributed, cfg.device)
            # Every check that can refuse the command runs first and writes nothing: rank 0 owns the
            # run folder and decides, the other ranks learn its answer (or its error). Only then is
            # anything written: the folder, train.log, the tokenizer and token files, config.json.
            self.resume_from = self.dist.main_first(self._preflight, resume, overwrite, tokens_from)
            swept = self.dist.main_first(make_run_folder, cfg, overwrite, tokens_from)
            self.log, self._handlers = setup_logging(self.out, f"drat.train.{id(self)}", self.dist.rank)
            for msg in self._warnings:
                self.log.warning(f"warning: {msg}")
            if swept[0]:
                self.log.info(f"removed {swept[0]} stray temporary file(s), {swept[1]:,} bytes, left in "
                              f"{self.out} by an interrupted write")
            self._setup(self.resume_from)
        except BaseException:
            self.close()
            raise

    def _preflight(self, resume: str | None, overwrite: bool, tokens_from: str | None) -> Path | None:
        """Every refusal of this launch, before anything is written (rank 0): the run folder
        (`check_run_folder`), the checkpoint to resume (its digest, and whether it belongs to this
        config, tokenizer, gating and world size), the inputs (`plan_inputs`: the tokenizer, and a
        corpus that holds a batch), and a budget that the model's states alone do not exceed.
        Returns the checkpoint to resume from; keeps what it loaded for `_setup`."""
        cfg = self.cfg
        path = check_run_folder(cfg, resume, overwrite, tokens_from)
        # from the config alone: no vocabulary is smaller than the bytes and the end-of-text token
        self._check_budget(MIN_VOCAB_SIZE)
        state = None
        if path is not None:
            state = load_checkpoint(path, map_location="cpu", allow_unverified=self.allow_unverified,
                                    warn=self._warnings.append)
        self._input_plan = plan_inputs(cfg, self.out, path is not None, tokens_from)
        tok = self._input_plan.tokenizer
        if state is not None:
            check_resumable(state, path, cfg, tok.sha256, has_gates=cfg.strategy == "drat",
                            world=self.dist.world)
            self._check_vocab(state, path, tok.vocab_size)
        self._check_budget(tok.vocab_size)  # exactly, now that the tokenizer is known
        self._preflight_state = state
        return path

    def _check_budget(self, vocab_size: int) -> None:
        """BudgetInfeasibleError when the model's states alone (parameters, gradients, AdamW
        moments, per process) exceed `budget_gib`, with a tokenizer of `vocab_size` tokens."""
        cfg = self.cfg
        if cfg.budget_gib is None:
            return
        with torch.device("meta"):  # the parameter count, without allocating a parameter
            states = model_state_bytes(build_model(cfg, cfg.model_config(vocab_size)))
        budget_to_activation_bytes(cfg.budget_gib, states // self.dist.world if self.dist.mode == "fsdp"
                                   else states)

    @staticmethod
    def _check_vocab(state: dict, path: Path, vocab_size: int) -> None:
        if state["model_config"]["vocab_size"] != vocab_size:
            raise TrainingError(f"checkpoint {path} has a {state['model_config']['vocab_size']}-token "
                                f"model but the tokenizer has {vocab_size} tokens")

    # ------------------------------------------------------------------------- the loop
    def train(self, stop_after: int | None = None) -> dict:
        """Train to `cfg.steps`; `stop_after` ends this launch early at that step (checkpointed),
        as a preemption would: the schedules still span `cfg.steps`."""
        cfg = self.cfg
        if self.step >= cfg.steps:
            return self._already_finished()
        end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
        if self.dist.is_main:
            self._sinks = MetricSinks(self.out, cfg, self.step, self.log)
        if self.device.type == "cuda":  # peak memory of training, not of the cost measurements
            torch.cuda.reset_peak_memory_stats(self.device)
        t_start = time.perf_counter()
        try:
            if self.step == 0 and self.initial_val is None:
                self.run_eval()
            # the bar needs a terminal; elsewhere (a log file, a batch job) ProgressLine says how it goes
            show_bar = sys.stderr.isatty() and self.dist.is_main
            pbar = tqdm(total=cfg.steps, initial=self.step, dynamic_ncols=True, desc="train",
                        disable=not show_bar)
            progress = ProgressLine(self.step, cfg.steps, self.tokens_per_step)
            t_log, steps_since_log = time.perf_counter(), 0
            with ScheduledGC(cfg.gc_every_steps) as sgc:  # the collector on a schedule (runtime.py)
                while self.step < end:
                    out = self.train_step()
                    sgc.step(self.step)
                    steps_since_log += 1
                    pbar.update(1)
                    rec = None
                    log_due = self.step % cfg.log_every == 0 or self.step == end
                    eval_due = self.step % cfg.eval_every == 0 or self.step == cfg.steps
                    ckpt_due = (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == end
                    if log_due or eval_due or ckpt_due:  # these read the device anyway
                        self._stop_if_diverged(check_weights=ckpt_due)
                    if log_due:
                        rec = self.log_metrics(out, time.perf_counter() - t_log, steps_since_log)
                        pbar.set_postfix(loss=f"{rec['loss']:.4f}")
                        t_log, steps_since_log = time.perf_counter(), 0
                    self._report_progress(progress, out, rec, end, to_console=not show_bar)
                    if eval_due:
                        self.run_eval()
                    if ckpt_due:
                        self.train_time_s += time.perf_counter() - t_start
                        t_start = time.perf_counter()
                        self.save_checkpoint()
            pbar.close()
            self.train_time_s += time.perf_counter() - t_start
            summary = self._summary(finished=self.step >= cfg.steps)
            if self.dist.is_main:
                write_json_atomic(self.out / "summary.json", summary)
            return summary
        finally:
            self._close_sinks()

    def _report_progress(self, progress: ProgressLine, out: dict, rec: dict | None, end: int,
                         to_console: bool) -> None:
        """Every tenth log record a step line; between them a progress line whenever one is due.
        The progress line goes to the console only where there is no bar (it is in train.log always)."""
        if not self.dist.is_main:
            return
        if rec is not None and (self.step % (self.cfg.log_every * 10) == 0 or self.step == end):
            self.log.info(f"step {self.step}: loss {rec['loss']:.4f}, lr {rec['lr']:.2e}, "
                          f"{rec['tokens_per_s']:.0f} tok/s")
            progress.reset(self.step)
        elif progress.due():
            # between log records: this process's loss of the step (no collective on one rank's clock)
            loss = rec["loss"] if rec is not None else out["loss_t"].item()
            self.log.info(progress.line(self.step, loss), extra={"console": to_console})

    def _already_finished(self) -> dict:
        """`train()` of a run at its last step: say so, train nothing, leave its files alone."""
        self.log.info(f"run in {self.out} already finished at step {self.step}; nothing to do")
        path = self.out / "summary.json"
        try:
            stored = json.loads(path.read_text())
            if stored.get("step") == self.step:
                return stored
        except (OSError, ValueError, AttributeError):
            pass  # missing or unreadable: the launch that finished died before writing it
        summary = self._summary(finished=True)
        if self.dist.is_main:
            write_json_atomic(path, summary)
        return summary

    def _summary(self, finished: bool) -> dict:
        return {
            "finished": finished,
            "step": self.step,
            "initial_val_loss": self.initial_val["loss"] if self.initial_val else None,
            "final_val_loss": self.last_val["loss"] if self.last_val else None,
            "final_val_ppl": self.last_val["ppl"] if self.last_val else None,
            "tokens_seen": self.step * self.tokens_per_step,
            "wall_time_s": self.train_time_s,
            "params": self.model.num_params(),
            "lam": self.gating.lam if self.gating is not None else None,
            "matmul_tflops": self.mfu.peak_tflops,
            "final_plan": self.gating.final_plan() if self.gating is not None else None,
            "provenance": provenance(self.device),
            "config": json.loads((self.out / "config.json").read_text()),
            "world_size": self.dist.world,
        }

    # ------------------------------------------------------------------------- one step
    def train_step(self) -> dict:
        """One optimizer step (all micro-batches); returns what the log line needs."""
        st, plan = self._choose_plan()
        out: dict[str, Any] = {"lr": self.scheduler.get_last_lr()[0],
                               "lam": self.gating.lam if self.gating is not None else None}
        cuda = self.device.type == "cuda"
        if cuda:  # this step's own peak (the log interval's is the max of its steps')
            torch.cuda.reset_peak_memory_stats(self.device)
        out["loss_t"] = self._forward_backward()
        if st is not None:  # the gates are outside DDP/FSDP: every rank computes this same gradient
            out.update(self.gating.backward_resource(st), st=st.detach(), plan=plan)
        out.update(self._optimizer_step())
        step_peak_bytes = torch.cuda.max_memory_allocated(self.device) if cuda else None
        if step_peak_bytes is not None:
            self._interval_step_peaks.append(step_peak_bytes)
        if self.gating is not None:
            self.gating.step(plan, step_peak_bytes)
            replan = self.gating.observe_link(plan, self.step)
            if replan is not None:
                self._emit(replan)
        # the first step whose loss was NaN or inf, kept on the device (no sync here)
        self._diverged_at = torch.where(~torch.isfinite(out["loss_t"]) & (self._diverged_at == 0),
                                        self.step + 1, self._diverged_at)
        self.step += 1
        return out

    def _stop_if_diverged(self, check_weights: bool) -> None:
        """Stop the run (TrainingDiverged) when a step's loss was NaN or inf, or, before a
        checkpoint, when a weight is: the diverged state is never checkpointed, so the latest
        checkpoint stays the last good one. Every rank calls it (the flags are reduced over ranks)."""
        flags = [self._diverged_at.to(torch.float64)]
        if check_weights:  # an update can break the weights while the loss that led to it was finite
            local = [p.to_local() if hasattr(p, "to_local") else p for p in self.model.parameters()]
            broken = torch.stack([~torch.isfinite(p.detach()).all() for p in local]).any()
            flags.append(broken.to(torch.float64))
        loss_step, weights = (self.dist.max(torch.stack(flags).to(self.device)).tolist() + [0.0])[:2]
        if not loss_step and not weights:
            return
        what = (f"the loss is NaN or inf at step {int(loss_step)}" if loss_step
                else f"the weights are NaN or inf after step {self.step}")
        last = latest_checkpoint(self.out / CHECKPOINT_DIR)
        kept = f"its latest checkpoint stays {last}" if last is not None else "it has no checkpoint yet"
        msg = (f"training diverged: {what}; the run stopped without checkpointing that state ({kept}); "
               f"lower --lr or lengthen --warmup and start again with --overwrite")
        if self.dist.is_main:  # train.log says why the run stopped; the console gets the error line
            self.log.error(msg, extra={"console": False})
        raise TrainingDiverged(msg)

    def _choose_plan(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """drat: this step's sample `st` of the gates and its hard plan, pinned on the model."""
        if self.gating is None:
            return None, None
        st, plan = self.gating.sample_plan(self.step)
        if self.dist.mode == "fsdp":
            set_block_resharding(self.model, self.strategy.decisions(self.model))
        return st, plan

    def _forward_backward(self) -> torch.Tensor:
        """Forward and backward of every micro-batch; returns the step's mean loss (a 0-d tensor)."""
        cfg = self.cfg
        loss_sum = torch.zeros((), device=self.device)
        world, rank = self.dist.world, self.dist.rank
        for micro in range(cfg.grad_accum):
            # The batch is a function of (seed, step, micro, rank) alone: the data position is the
            # step, and the ranks take distinct batches (one process: index step·grad_accum + micro).
            index = (self.step * cfg.grad_accum + micro) * world + rank
            x, y = self.train_data.batch_at(index, cfg.batch_size, cfg.seed)  # [batch_size, seq_len]
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with grad_sync(self.train_model, self.dist, sync=micro == cfg.grad_accum - 1):
                with autocast_ctx(self.device):
                    # a wrapped model takes DRAT's (idx, targets) through step_loss; one process only
                    loss = self.train_model.step_loss(x, y) if self.cfg.hf else self.train_model(x, y)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
        return loss_sum / cfg.grad_accum

    def _optimizer_step(self) -> dict:
        out = {}
        if self.cfg.grad_clip > 0:
            # model parameters only: the gates' gradient must not change the model's clip factor
            out["grad_norm_t"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out

    # ------------------------------------------------------------------------- metrics and evaluation
    def log_metrics(self, out: dict, elapsed_s: float, n_steps: int) -> dict:
        """One `kind: train` record: reads the step's tensors (a device sync, so only on log steps).
        Every rank calls it (the loss is averaged over ranks); rank 0 writes it."""
        gated = self.gating is not None
        saved_bytes = self.gating.plan_bytes(out["plan"]) if gated else float(self.plan_bytes)
        rec: dict[str, Any] = {
            "kind": "train",
            "step": self.step,
            # the loss of the global batch; full precision: resumed/ungated runs compare it exactly
            "loss": self.dist.mean(out["loss_t"]).item(),
            "lr": out["lr"],
            "lam": out["lam"],
            "tokens_seen": self.step * self.tokens_per_step,
            "step_ms": 1e3 * elapsed_s / max(n_steps, 1),
            "tokens_per_s": n_steps * self.tokens_per_step / max(elapsed_s, 1e-9),
            "saved_activation_bytes": saved_bytes,  # per rank
        }
        if "grad_norm_t" in out:
            rec["grad_norm"] = full_tensor(out["grad_norm_t"]).item()
        if self.device.type == "cuda":
            # every step's own peak since the last log line (reset below), so later plans are not
            # masked by early ones; a budget is judged on their maximum and p99. Each the largest
            # over ranks (FSDP2 ranks hold equal shards; the one that differs sets the limit)
            steps = torch.tensor([float(b) for b in self._interval_step_peaks], device=self.device,
                                 dtype=torch.float64)  # [steps since the last log line]
            step_peaks = [int(b) for b in self.dist.max(steps).tolist()]
            rec["peak_memory_bytes"] = max(step_peaks, default=0)
            rec["step_peak_bytes"] = step_peaks
            self._interval_step_peaks = []
            if self.gating is not None and self.gating.budget is not None:
                rec["other_bytes"] = int(self.gating.budget.other_bytes)
            rec["mfu"] = self.mfu(rec["tokens_per_s"])
        if self.gating is not None:
            rec.update(self.gating.record(out))
            link = self.gating.costs.link if self.gating.costs is not None else None
            if rec.get("d2h_bytes") and link:  # the share of the step the link was busy each way
                rec["link_utilisation"] = link_utilisation(rec["d2h_bytes"], rec["step_ms"], link)
        self._emit(rec)
        return rec

    def _emit(self, rec: dict) -> None:
        if self._sinks is not None:  # rank 0 only
            self._sinks.emit(rec)

    def evaluate(self) -> dict:
        cfg = self.cfg
        return evaluate_loss(self.model, self.val_data, cfg.batch_size, cfg.eval_batches, self.device)

    def run_eval(self) -> dict:
        val = self.evaluate()
        self.last_val = val
        if self.initial_val is None:
            self.initial_val = val
        self._emit({"kind": "eval", "step": self.step, "val_loss": val["loss"], "val_ppl": val["ppl"],
                    "val_tokens": val["tokens"]})
        self.log.info(f"step {self.step}: val loss {val['loss']:.4f}, ppl {val['ppl']:.2f}")
        return val

    # ------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        state = trainer_state(self)  # collective under torchrun: every rank calls it
        path = checkpoint_path(self.out / CHECKPOINT_DIR, self.step)
        if self.dist.is_main:
            save_checkpoint(state, self.out / CHECKPOINT_DIR, self.step, self.cfg.keep_last_k)
            self.log.info(f"step {self.step}: checkpoint -> {path}")
        self.dist.barrier()  # nobody runs ahead (or exits) before the file is in place
        return path

    def _restore(self, state: dict, path: Path) -> None:
        restore_trainer(self, state, path)
        if self.dist.is_main:
            discard_after(self.out, self.step)
        self.log.info(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------------- set-up
    def _setup(self, resume_from: Path | None) -> None:
        cfg = self.cfg
        # CPU first: RNG states must stay CPU byte tensors; load_state_dict copies the rest over.
        # Every rank reads the checkpoint: each needs the optimizer state (DDP) or its shard of it
        # (rank 0 read it in _preflight).
        if self.dist.is_main:
            state = self._preflight_state
        else:
            state = load_checkpoint(resume_from, map_location="cpu", allow_unverified=self.allow_unverified,
                                    warn=self.log.warning) if resume_from else None
        self._preflight_state = None
        # rank 0 writes the tokenizer and the token files it planned; then the other ranks read them
        self.dist.main_first(self._load_inputs, state is not None)
        if not self.dist.is_main:
            self._load_inputs(resuming=True)
        self.model = self._build_model()
        if state is not None:
            self._check_vocab(state, resume_from, self.tokenizer.vocab_size)
        self.gating = None
        if cfg.strategy == "drat":
            self.gating = GateTraining(cfg, [k.label() for k in self.model.graph.keys],
                                       self._model_state_bytes(), self.dist, self.device, self.log)
        self.strategy = self.gating.strategy if self.gating is not None else make_strategy(cfg.strategy)
        self.model.set_strategy(self.strategy)
        self.site_bytes: list[float] = []  # what storing each site saves for backward, measured
        self.plan_bytes: float | None = None  # what a baseline strategy saves, measured
        if state is None:
            # on the plain model, before wrapping: rank 0 measures, every rank uses its numbers
            self.set_costs(self.dist.main_first(self._measure_costs))
        self.train_model = wrap_model(self.model, self.dist, self.device)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg, self.device, self._lr_lambda)
        self.mfu = MFU(self.model, cfg.seq_len, self.device, self.dist.world)
        self.step = 0  # optimizer steps completed
        self._diverged_at = torch.zeros((), dtype=torch.long, device=self.device)  # 0: no NaN/inf loss yet
        self._interval_step_peaks: list[int] = []  # CUDA: each step's peak since the last log line
        self.train_time_s = 0.0  # time spent in train(), summed over the launches of the run
        self.initial_val: dict | None = None
        self.last_val: dict | None = None
        if state is not None:
            self._restore(state, resume_from)
        elif self.gating is not None and cfg.gate_warm_start:
            self.gating.warm_start()
        if self.gating is not None:
            self.gating.agree_across_ranks()
            self.gating.plan_prefetch()
        if self.dist.is_main:
            self._write_config()

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all ranks."""
        return self.cfg.tokens_per_step * self.dist.world

    def _model_state_bytes(self) -> int:
        """Model states per process: FSDP2 shards parameters, gradients and AdamW moments."""
        n = model_state_bytes(self.model)
        return n // self.dist.world if self.dist.mode == "fsdp" else n

    def _load_inputs(self, resuming: bool) -> None:
        plan = getattr(self, "_input_plan", None)  # rank 0's, from _preflight
        self._input_plan = None
        inputs = (write_inputs(plan, self.cfg, self.out, self.log) if plan is not None
                  else prepare_inputs(self.cfg, self.out, resuming, self.log))
        self.tokenizer, self.token_meta = inputs.tokenizer, inputs.token_meta
        self.train_data, self.val_data = inputs.train, inputs.val

    def _build_model(self) -> GPT:
        seed = self.cfg.seed
        torch.manual_seed(seed)  # the model init is the first draw from the seeded stream
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        self.model_cfg = self.cfg.model_config(self.tokenizer.vocab_size)
        model = build_model(self.cfg, self.model_cfg).to(self.device)
        model.train()
        if self.dist.rank > 0:
            # Every rank built the same weights from the same seed (FSDP2 shards them as they are;
            # DDP would broadcast rank 0's anyway). Dropout, though, should differ between ranks.
            torch.manual_seed(_rank_seed(seed, self.dist.rank))
            if self.device.type == "cuda":
                torch.cuda.manual_seed(_rank_seed(seed, self.dist.rank))
        self.log.info(f"model: {self.cfg.size} {model.num_params() / 1e6:.2f}M parameters, "
                      f"{len(model.graph)} sites, strategy {self.cfg.strategy}, device {self.device}")
        return model

    def _lr_lambda(self, step: int) -> float:
        cfg = self.cfg
        return lr_multiplier(step, cfg.warmup_steps, cfg.steps, cfg.min_lr / cfg.lr)

    def _measure_costs(self) -> dict:
        """Site bytes (and for drat the gate costs) from one real training batch, measured once."""
        x, y = self.train_data.batch_at(0, self.cfg.batch_size, self.cfg.seed)  # [batch_size, seq_len]
        x, y = x.to(self.device), y.to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        # Measuring runs forwards (dropout) and a CPU roofline probe (randn): fork the RNG so the
        # training stream, and with it every dropout mask, is that of a run without measurements.
        out: dict[str, Any] = {"site_bytes": None, "plan_bytes": None, "costs": None}
        with torch.random.fork_rng(devices=devices):
            with autocast_ctx(self.device):
                out["site_bytes"] = [float(b) for b in measure_site_bytes(self.model, x, y)]
                if self.gating is None:
                    out["plan_bytes"], _ = saved_activation_bytes(self.model, x, y)
            if self.gating is not None:
                costs = build_costs(self.model, x, y, self.cfg.cost_model)
                if self.cfg.arms == 3:  # the offload arm prices the host link it runs on
                    measured = self.cfg.cost_model == "measured"
                    costs.link = measure_link(self.device) if measured else nominal_link(self.device)
                out["costs"] = costs.to_dict()
        self.model.zero_grad(set_to_none=True)
        return out

    def set_costs(self, measured: dict) -> None:
        """Site bytes and costs as measured (or as stored in a checkpoint): plain numbers, so that
        rank 0's measurement can be broadcast and every rank prices the gates alike."""
        self.site_bytes = measured["site_bytes"]
        if measured["plan_bytes"] is not None:
            self.plan_bytes = measured["plan_bytes"]
        if self.gating is not None:
            self.gating.set_costs(SiteCosts(**measured["costs"]), self.site_bytes)

    def _write_config(self) -> None:
        resolved = {
            "training": self.cfg.to_dict(),
            "model": self.model_cfg.to_dict(),
            "derived": {"warmup_steps": self.cfg.warmup_steps, "lam": configured_lam(self.cfg),
                        "tokens_per_step": self.tokens_per_step, "params": self.model.num_params(),
                        "device": str(self.device), "world_size": self.dist.world},
            "tokenizer": {"path": str(self.cfg.tokenizer or self.out / "tokenizer.json"),
                          "vocab_size": self.tokenizer.vocab_size, "sha256": self.tokenizer.sha256},
            "data": {k: self.token_meta[k]
                     for k in ("corpus_spec", "corpus_sha256", "corpus_manifest_sha256")},
            "sites": [k.label() for k in self.model.graph.keys],
        }
        write_json_atomic(self.out / "config.json", resolved)

    # ------------------------------------------------------------------------- closing
    def _close_sinks(self) -> None:
        if self._sinks is not None:
            self._sinks.close()
            self._sinks = None

    def close(self) -> None:
        self._close_sinks()
        for h in self._handlers:
            self.log.removeHandler(h)
            h.close()
        self._handlers = []
        if self.dist is not None:
            self.dist.close()  # the process group, if this trainer created it
        if self._restore_determinism is not None:
            self._restore_determinism()  # process-wide switches: leave them as they were found
            self._restore_determinism = None
