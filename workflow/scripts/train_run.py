"""Pipeline step `train`: one training run from a resolved config, on the shared tokenizer and tokens.

    python workflow/scripts/train_run.py --config-json '{"size": "tiny", ...}' --tokenizer tok.json \
        --tokens results/smoke/data/tokens --out results/smoke/train/tiny/none/seed0 --threads 1

The run folder is made fresh (what a previous attempt left of the trainer's artifacts is
removed), the shared token files are linked (or copied) into `<out>/tokens`, and
`drat.train.ResourceAwareTrainer` trains into it: config.json, metrics.jsonl, summary.json,
train.log, checkpoints/.

With `--prepare-only FILE` it prepares the folder, writes the run's TrainingConfig fields to FILE
and stops; the training rule then starts `torchrun ... -m drat.cli train --config FILE
--distributed ddp|fsdp` on several GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def link_or_copy_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            try:
                os.link(f, dst / f.name)
            except OSError:  # another file system
                shutil.copy2(f, dst / f.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config-json", required=True, help="TrainingConfig fields as one JSON object")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--tokens", required=True, help="token folder of the tokenize step")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--prepare-only", metavar="FILE", default=None,
                    help="prepare the run folder, write the config to FILE (JSON) for torchrun, stop")
    a = ap.parse_args(argv)

    import torch

    from drat.train.trainer import RUN_ARTIFACTS, ResourceAwareTrainer, TrainingConfig

    if a.threads:
        torch.set_num_threads(a.threads)
    fields = json.loads(a.config_json)
    cfg = TrainingConfig.from_dict({**fields, "tokenizer": a.tokenizer, "out": a.out})
    out = Path(a.out)
    for name in RUN_ARTIFACTS:  # a fresh run: nothing of an earlier, failed attempt stays
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    link_or_copy_tree(Path(a.tokens), out / "tokens")
    if a.prepare_only:
        Path(a.prepare_only).parent.mkdir(parents=True, exist_ok=True)
        Path(a.prepare_only).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        return 0
    trainer = ResourceAwareTrainer(cfg)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    print(json.dumps({"out": a.out, **{k: summary[k] for k in ("step", "final_val_loss", "wall_time_s")}}))
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
