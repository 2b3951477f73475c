"""Evaluation of policies and reward models: generations, log-probabilities, win-rates, accuracies."""
