"""Reward modelling on TRL's RewardTrainer: a one-label sequence scorer trained with Bradley-Terry."""

from __future__ import annotations

from alignment_core.context import StageContext
from alignment_core.data.prepared import prepare_preference_data
from alignment_core.specs import JobSpec
from alignment_core.stages import StageResult
from alignment_core.stages.trainer_bridge import ContextCallback
from alignment_core.stages.trainer_run import train_and_finish
from alignment_core.stages.training_arguments import early_stopping_callbacks, trainer_config


def run(spec: JobSpec, context: StageContext) -> StageResult:
    """Train a reward model on the spec's preference pairs."""
    from trl import RewardConfig, RewardTrainer

    from alignment_core.modeling.loading import load_sequence_scorer, load_tokenizer, resolve_device

    device = resolve_device(spec.distribution)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    data = prepare_preference_data(spec, tokenizer, for_reward_model=True)
    model = load_sequence_scorer(spec.model, device, trainable=True)
    has_eval = data.eval is not None
    config = trainer_config(
        RewardConfig, spec, context, device, has_eval,
        max_length=spec.data.max_length,
        center_rewards_coefficient=spec.method.center_rewards_coefficient,
    )
    bridge = ContextCallback(context)
    trainer = RewardTrainer(
        model=model, args=config, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, callbacks=[bridge, *early_stopping_callbacks(spec)],
    )
    return train_and_finish(trainer, bridge, spec, context, tokenizer, has_eval)
