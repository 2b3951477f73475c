"""One way to turn a prompt into model input, used by training data, generation and evaluation alike."""

from __future__ import annotations

import contextlib
import json
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


def template_renders_tool_calls(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template reads messages' ``tool_calls`` (many base models' do not)."""
    template = tokenizer.chat_template
    text = " ".join(template.values()) if isinstance(template, dict) else str(template or "")
    return "tool_calls" in text


def tool_calls_as_text(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn whose tool calls are written into its content, one ``<tool_call>{json}</tool_call>`` each
    (the Hermes / Qwen convention), for templates that would otherwise drop them and train an empty turn."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    written = []
    for call in calls:
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            with contextlib.suppress(json.JSONDecodeError):  # else kept as the string the data holds
                arguments = json.loads(arguments)
        written.append("<tool_call>\n" + json.dumps({"name": function.get("name"), "arguments": arguments},
                                                   ensure_ascii=False) + "\n</tool_call>")
    content = message.get("content") or ""
    text = "\n".join(([content] if content else []) + written)
    return {key: value for key, value in message.items() if key != "tool_calls"} | {"content": text}
