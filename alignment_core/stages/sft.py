"""Supervised fine-tuning on TRL's SFTTrainer: load, build data, train, evaluate, save.

The data arrives tokenized by ``data.prepared`` with labels only on assistant tokens (per-message
``weight: 0`` honoured), so TRL's own chat templating and masking are switched off.
"""

from __future__ import annotations

from alignment_core.context import StageContext
from alignment_core.data.prepared import prepare_sft_data
from alignment_core.specs import JobSpec
from alignment_core.stages import StageResult
from alignment_core.stages.trainer_bridge import ContextCallback
from alignment_core.stages.trainer_run import train_and_finish
from alignment_core.stages.training_arguments import early_stopping_callbacks, trainer_config


def run(spec: JobSpec, context: StageContext) -> StageResult:
    """Train a causal LM on the spec's supervised data."""
    from trl import SFTConfig, SFTTrainer

    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer, resolve_device

    device = resolve_device(spec.distribution)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    data = prepare_sft_data(spec, tokenizer)
    # LoRA's initial weights come from the spec's seed: the same spec trains the same in any process.
    model = load_causal_lm(spec.model, device, trainable=True, seed=spec.training.seed)
    has_eval = data.eval is not None
    config = trainer_config(
        SFTConfig, spec, context, device, has_eval,
        # Packed rows are at most max_length already, and TRL refuses a max_length with padding_free.
        max_length=None if spec.data.packing else spec.data.max_length,
        packing=False,  # packed already, by data.packing
        padding_free=spec.data.packing,  # packed rows carry seq_lengths: no attention across examples
        assistant_only_loss=False,  # labels already mask everything but the trained turns
        completion_only_loss=False,
        shuffle_dataset=False,
    )
    bridge = ContextCallback(context)
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, callbacks=[bridge, *early_stopping_callbacks(spec)],
    )
    return train_and_finish(trainer, bridge, spec, context, tokenizer, has_eval)
