"""Direct preference optimisation on TRL's DPOTrainer.

With LoRA the reference is the policy with its adapters disabled (no second copy); for full
fine-tuning a frozen copy is loaded. DPO from an SFT stage's adapter works because the loader merges
that adapter into the base before new adapters are attached.
"""

from __future__ import annotations

from typing import Any

from alignment_core.context import StageContext
from alignment_core.data.prepared import prepare_preference_data
from alignment_core.specs import DpoMethod, JobSpec
from alignment_core.stages import StageResult
from alignment_core.stages.trainer_bridge import ContextCallback
from alignment_core.stages.trainer_run import train_and_finish
from alignment_core.stages.training_arguments import early_stopping_callbacks, trainer_config


def loss_arguments(method: DpoMethod) -> dict[str, Any]:
    """TRL's loss_type / loss_weights / label_smoothing for our loss_type and label smoothing.

    TRL 1.16's 'sigmoid' ignores label_smoothing. cDPO, -(1-e) log s(bx) - e log s(-bx), equals
    2(1-e) * sigmoid - (1-2e) * robust exactly (robust = [-(1-e) log s(bx) + e log s(-bx)] / (1-2e)),
    so it is built from those two TRL losses; tests check it against losses.dpo_loss.
    """
    if method.loss_type == "sigmoid" and method.label_smoothing > 0:
        smoothing = method.label_smoothing
        loss_types, weights = ["sigmoid", "robust"], [2 * (1 - smoothing), -(1 - 2 * smoothing)]
    else:
        loss_types, weights = [method.loss_type], [1.0]
    if method.sft_weight > 0:  # RPO: TRL's 'sft' term is the chosen tokens' mean negative log-likelihood
        loss_types, weights = [*loss_types, "sft"], [*weights, method.sft_weight]
    return {"loss_type": loss_types, "loss_weights": weights, "label_smoothing": method.label_smoothing}


def pretokenized_dpo_trainer_class():
    """DPOTrainer that takes our pre-tokenized rows (prompt_ids / chosen_ids / rejected_ids) as they are."""
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset  # tokenized and truncated by data.tokenization
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return PretokenizedDPOTrainer


def run(spec: JobSpec, context: StageContext) -> StageResult:
    """Align a causal LM to the spec's preference pairs with DPO."""
    from peft import PeftModel
    from trl import DPOConfig

    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer, resolve_device

    device = resolve_device(spec.distribution)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    data = prepare_preference_data(spec, tokenizer, for_reward_model=False)
    # LoRA's initial weights come from the spec's seed: the same spec trains the same in any process.
    model = load_causal_lm(spec.model, device, trainable=True, seed=spec.training.seed)
    reference = None
    if not isinstance(model, PeftModel) and not spec.method.precompute_ref_log_probs:
        reference = load_causal_lm(spec.model, device, trainable=False)
    has_eval = data.eval is not None
    config = trainer_config(
        DPOConfig, spec, context, device, has_eval,
        beta=spec.method.beta,
        max_length=spec.data.max_length,
        precompute_ref_log_probs=spec.method.precompute_ref_log_probs,
        **loss_arguments(spec.method),
    )
    bridge = ContextCallback(context)
    trainer = pretokenized_dpo_trainer_class()(
        model=model, ref_model=reference, args=config, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, callbacks=[bridge, *early_stopping_callbacks(spec)],
    )
    return train_and_finish(trainer, bridge, spec, context, tokenizer, has_eval)
