"""One way to turn a prompt into model input, used by training data, generation and evaluation alike."""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, Any]]


def as_messages(prompt: str | Messages) -> Messages:
    """A string prompt becomes one user turn; a message list is returned as it is."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def as_assistant_turn(response: str | Messages) -> Messages:
    """A string response becomes one assistant turn; a message list is returned as it is."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return list(response)


def render_prompt(tokenizer: Any, prompt: str | Messages) -> str:
    """The prompt as text ending where the assistant's answer starts (the model's chat template)."""
    return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)


def prompt_text(prompt: str | Messages) -> str:
    """The last user turn's text, e.g. for a rule checker that reads the question."""
    if isinstance(prompt, str):
        return prompt
    users = [message["content"] for message in prompt if message.get("role") == "user"]
    return users[-1] if users else ""
