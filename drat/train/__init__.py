"""Training: the trainer, its config, checkpoints and multi-GPU support.

    config.py      TrainingConfig: what a run is asked to do, and where its fields come from
    trainer.py     ResourceAwareTrainer: the training loop, one named step at a time
    gating.py      the gates of a drat run and the one owner of λ (budget mode closed on the peak)
    run_folder.py  the run folder: preparing, overwriting, resuming; train.log
    inputs.py      the tokenizer and token files a run trains on
    metrics.py     metrics.jsonl, TensorBoard, W&B; the progress line; MFU
    checkpoint.py  checkpoint files, and what a resumed run must agree on
    inference.py   evaluation, `drat eval` and `drat generate`
    distributed.py DDP/FSDP2 under torchrun
"""

from ..gates import DEFAULT_LAMBDA
from .checkpoint import CheckpointError
from .config import (
    TrainingConfig,
    TrainingDiverged,
    TrainingError,
    parse_config_json,
    resolve_training_config,
)
from .inference import evaluate_checkpoint, generate_text, load_trained
from .run_folder import RUN_ARTIFACTS, prepare_run_folder, write_json_atomic
from .trainer import ResourceAwareTrainer

__all__ = ["CheckpointError", "DEFAULT_LAMBDA", "RUN_ARTIFACTS", "ResourceAwareTrainer", "TrainingConfig",
           "TrainingDiverged", "TrainingError", "evaluate_checkpoint", "generate_text", "load_trained",
           "parse_config_json", "prepare_run_folder", "resolve_training_config", "write_json_atomic"]
