"""PPO (RLHF) in one module per role of the dataflow: rollout, scoring, kl, value, update, checkpoint."""
