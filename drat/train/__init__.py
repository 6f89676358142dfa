"""Training: the trainer, its config, checkpoints and multi-GPU support.

`ResourceAwareTrainer` and `TrainingConfig` are the names DRAT has always exported for training.
"""

from .trainer import (
    ResourceAwareTrainer,
    TrainingConfig,
    TrainingError,
    evaluate_checkpoint,
    generate_text,
    load_trained,
    resolve_training_config,
)

__all__ = ["ResourceAwareTrainer", "TrainingConfig", "TrainingError", "evaluate_checkpoint", "generate_text",
           "load_trained", "resolve_training_config"]
