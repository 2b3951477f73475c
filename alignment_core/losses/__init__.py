"""Pure tensor loss functions: no models, no trainers; every stage and test uses these."""

from alignment_core.losses.dpo import DpoLossType, dpo_loss, sequence_log_probs
from alignment_core.losses.language_model import masked_next_token_loss
from alignment_core.losses.reward import bradley_terry_loss

__all__ = ["DpoLossType", "bradley_terry_loss", "dpo_loss", "masked_next_token_loss", "sequence_log_probs"]
