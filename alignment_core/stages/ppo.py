"""PPO (RLHF): sample responses, score them, compare with the frozen SFT policy, then update policy and value.

The recipe, top to bottom: load policy, reference and value; build the reward client and the prompt
order; resume if a checkpoint exists; then for each update: rollout -> reward -> reference / value
passes and GAE -> PPO epochs -> KL controller -> report -> checkpoint / stop. Finally save the policy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import get_scheduler, set_seed

from alignment_core.context import StageContext
from alignment_core.data.chat import prompt_text
from alignment_core.ppo.checkpoint import PpoProgress, load_ppo_checkpoint, prune_checkpoints, save_ppo_checkpoint
from alignment_core.ppo.experience import make_experience, reference_scope
from alignment_core.ppo.forward import ValueHead
from alignment_core.ppo.kl import build_kl_controller
from alignment_core.ppo.prompts import PromptCursor, load_prompts, load_training_prompts
from alignment_core.ppo.rollout import SamplingSettings, encode_prompts, generate_rollout
from alignment_core.ppo.scoring import RunningMoments, score_rollout
from alignment_core.ppo.update import PpoModels, ppo_update, trainable_parameters
from alignment_core.rewards import RewardClient, build_reward_client
from alignment_core.specs import JobSpec, PpoMethod
from alignment_core.stages import StageResult
from alignment_core.stages.performance import rollout_static_cache

EVAL_PROMPT_LIMIT = 256


class PpoConfigError(ValueError):
    """A spec PPO cannot run as given; names the field."""


def run(spec: JobSpec, context: StageContext) -> StageResult:
    """Train the policy with PPO against the spec's reward source; see the module docstring for the steps."""
    from alignment_core.modeling.loading import load_causal_lm, load_tokenizer, resolve_device
    from alignment_core.modeling.reference import disabled_adapters, load_reference
    from alignment_core.modeling.saving import save_model

    method: PpoMethod = spec.method
    training = spec.training
    if context.world_size > 1:
        raise PpoConfigError("distribution.num_workers: PPO runs on one worker for now; set it to 1")
    set_seed(training.seed)
    device = resolve_device(spec.distribution)
    tokenizer = load_tokenizer(spec.model.name_or_path)
    # LoRA's initial weights come from the spec's seed (as in sft / dpo): the same spec trains the same in any process.
    policy = load_causal_lm(spec.model, device, trainable=True, seed=training.seed)
    reference = load_reference(spec.model, policy, device)
    value_model, value_head = build_value(spec, policy, device)
    reward_client = build_reward_client(method.reward, device, handle=getattr(context, "reward_handle", None))
    prompts = load_training_prompts(spec.data)

    total_updates = training.max_steps or math.ceil(training.epochs * len(prompts) / method.rollout_batch_size)
    models = build_optimizers(spec, policy, value_model, value_head, total_updates)
    progress = PpoProgress(
        build_kl_controller(method.kl_coef, method.adaptive_kl, method.target_kl, method.kl_horizon),
        RunningMoments(),
        PromptCursor(prompts, training.seed),
    )
    step = 0
    if (checkpoint := context.resume_from()) is not None:
        step = load_ppo_checkpoint(checkpoint, models, progress)
    if context.rank == 0:
        context.plan_steps(total_updates)
    # Dropout off everywhere: the ratio new/old policy must be exactly 1 before the first update.
    for module in (policy, reference, value_model, value_head):
        if module is not None:
            module.eval()

    static = rollout_static_cache(device)
    sampling = SamplingSettings(
        method.max_new_tokens, method.temperature, method.top_p, static_cache=static, pad_multiple=64 if static else 1
    )
    micro_batch_size = training.batch_size
    metrics: dict[str, float] = {}
    trained_tokens = 0
    last_saved = step
    while step < total_updates:
        batch_prompts = progress.cursor.next_batch(method.rollout_batch_size)
        prompt_ids = encode_prompts(tokenizer, batch_prompts, spec.data.max_prompt_length)
        rollout = generate_rollout(policy, tokenizer, prompt_ids, sampling, device)
        scored = score_rollout(
            reward_client,
            [prompt_text(prompt) for prompt in batch_prompts],
            rollout.completions,
            rollout.has_eos.cpu(),
            rollout.response_lengths.cpu(),
            method,
            progress.moments,
        )
        kl_coef = progress.kl_controller.value
        experience, stats = make_experience(
            rollout, scored.scores, models, reference, disabled_adapters, method, kl_coef, micro_batch_size
        )
        update_metrics = ppo_update(
            models, experience, method, micro_batch_size, training.max_grad_norm, method.temperature
        )
        progress.kl_controller.update(stats.kl, len(batch_prompts))
        step += 1
        trained_tokens += int(rollout.response_lengths.sum())
        metrics = {
            "reward_mean": float(scored.raw_scores.mean()),
            "reward_std": float(scored.raw_scores.std(unbiased=False)),
            "score_mean": float(scored.scores.mean()),  # after penalties, normalisation and clipping
            "kl": stats.kl,
            "non_score_reward": stats.non_score_reward,
            "kl_coef": kl_coef,
            "response_length": float(rollout.response_lengths.float().mean()),
            "eos_fraction": float(rollout.has_eos.float().mean()),
            "value_mean": stats.value_mean,
            "return_mean": stats.return_mean,
            "learning_rate": models.policy_scheduler.get_last_lr()[0],
            **update_metrics,
        }
        context.report(step, metrics)
        stop = context.should_stop()
        due = training.save_steps is not None and step % training.save_steps == 0
        if due or stop or (step == total_updates and training.save_steps is None):
            save_checkpoint(context, step, models, progress, metrics, training.save_total_limit)
            last_saved = step
        if stop:
            status = "cancelled" if stop == "cancel" else "paused"
            return StageResult(status, None, step, trained_tokens, metrics)
    if last_saved != step and training.save_steps is not None:
        save_checkpoint(context, step, models, progress, metrics, training.save_total_limit)

    model_dir = save_model(policy, tokenizer, context.output_dir / "model", spec.output.merge_adapters)
    eval_metrics = evaluate(spec, policy, reference, tokenizer, reward_client, device) if spec.data.eval_files else {}
    if eval_metrics:
        context.report(step, eval_metrics)
    return StageResult("completed", model_dir, step, trained_tokens, metrics, eval_metrics)


def build_value(spec: JobSpec, policy: Any, device: Any) -> tuple[Any | None, ValueHead | None]:
    """A separate value model, or a linear head on the policy (`method.value_model`).

    The separate one starts from the reward model when PPO optimises its raw scores (its head already
    predicts the returns' main term), else from the policy's weights with a fresh one-logit head.
    """
    from alignment_core.modeling.loading import load_sequence_scorer

    method: PpoMethod = spec.method
    if method.value_model == "head":
        config = policy.config
        return None, ValueHead(config.hidden_size).to(device)
    # With normalised rewards the reward model's head is off by the reward scale: measured value loss 11-27 at the
    # first update, and value clipping lets it move 0.2 a step. Starting from the policy instead took the demo
    # example's rule satisfaction from 0.67 / 0.75 / 0.695 to 0.75 / 0.765 / 0.75 (seeds 42 / 0 / 1).
    from_reward_model = method.reward.type == "model" and method.reward.model and not method.normalize_rewards
    source = method.reward.model if from_reward_model else spec.model.name_or_path
    value_spec = spec.model.model_copy(update={"name_or_path": source})
    value_model = load_sequence_scorer(value_spec, device, trainable=True)
    if getattr(value_model.config, "pad_token_id", None) is None:
        value_model.config.pad_token_id = policy.config.pad_token_id
    return value_model, None


def build_optimizers(
    spec: JobSpec, policy: Any, value_model: Any | None, value_head: ValueHead | None, total_updates: int
) -> PpoModels:
    """AdamW + the spec's schedule for the policy (and head), and for a separate value model."""
    method: PpoMethod = spec.method
    training = spec.training
    minibatches = math.ceil(method.rollout_batch_size / min(method.mini_batch_size, method.rollout_batch_size))
    optimizer_steps = total_updates * method.ppo_epochs * minibatches
    warmup = int(training.warmup_ratio * optimizer_steps)

    def optimizer_for(*modules: Any) -> tuple[torch.optim.Optimizer, Any]:
        parameters = trainable_parameters(*modules)
        if not parameters:
            raise PpoConfigError("model: nothing to train (every parameter is frozen)")
        optimizer = torch.optim.AdamW(parameters, lr=training.learning_rate, weight_decay=training.weight_decay)
        return optimizer, get_scheduler(training.lr_scheduler, optimizer, warmup, optimizer_steps)

    policy_optimizer, policy_scheduler = optimizer_for(policy, value_head)
    value_optimizer = value_scheduler = None
    if value_model is not None:
        value_optimizer, value_scheduler = optimizer_for(value_model)
    return PpoModels(
        policy, value_model, value_head, policy_optimizer, value_optimizer, policy_scheduler, value_scheduler
    )


def save_checkpoint(
    context: StageContext,
    step: int,
    models: PpoModels,
    progress: PpoProgress,
    metrics: dict[str, float],
    keep: int | None,
) -> None:
    path = context.checkpoint_dir(step)
    save_ppo_checkpoint(path, step, models, progress, metrics)
    context.checkpoint_saved(step, path, metrics)
    prune_checkpoints(context.checkpoints_root, keep)


@torch.no_grad()
def evaluate(
    spec: JobSpec, policy: Any, reference: Any | None, tokenizer: Any, reward_client: RewardClient, device: Any
) -> dict[str, float]:
    """Greedy answers to held-out prompts scored by the same reward source, for the trained policy and for
    the reference (the starting policy), so a run's gain reads off its own metrics."""
    from alignment_core.modeling.reference import disabled_adapters

    method: PpoMethod = spec.method
    prompts = load_prompts(spec.data.eval_files, "auto", EVAL_PROMPT_LIMIT)
    metrics = greedy_scores(method, policy, tokenizer, prompts, spec.data.max_prompt_length, reward_client, device)
    reference_model, scope = reference_scope(policy, reference, disabled_adapters)
    with scope:
        start = greedy_scores(
            method, reference_model, tokenizer, prompts, spec.data.max_prompt_length, reward_client, device
        )
    return {
        "eval_reward_mean": metrics["reward_mean"],
        "eval_response_length": metrics["response_length"],
        "eval_reference_reward_mean": start["reward_mean"],
        "eval_reference_response_length": start["response_length"],
    }


def greedy_scores(
    method: PpoMethod,
    model: Any,
    tokenizer: Any,
    prompts: list,
    max_prompt_length: int,
    reward_client: RewardClient,
    device: Any,
) -> dict[str, float]:
    """Mean reward and response length of `model`'s greedy answers to `prompts`."""
    greedy = SamplingSettings(method.max_new_tokens, do_sample=False)
    scores: list[float] = []
    lengths: list[float] = []
    for start in range(0, len(prompts), method.rollout_batch_size):
        chunk = prompts[start : start + method.rollout_batch_size]
        prompt_ids = encode_prompts(tokenizer, chunk, max_prompt_length)
        rollout = generate_rollout(model, tokenizer, prompt_ids, greedy, device)
        scores.extend(reward_client.score([prompt_text(prompt) for prompt in chunk], rollout.completions))
        lengths.extend(rollout.response_lengths.tolist())
    return {"reward_mean": sum(scores) / len(scores), "response_length": sum(lengths) / len(lengths)}
