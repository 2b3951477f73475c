"""A tiny Llama-architecture model and a locally trained tokenizer, built without any network.

The demo and the tests load it through ``from_pretrained`` exactly as users load hub models.
"""

from __future__ import annotations

import os
from pathlib import Path

from alignment_core.demo.task import corpus_for_tokenizer

TINY_MODEL_NAME = "alignd-tiny"

PAD, EOS, BOS = "<|pad|>", "<|eos|>", "<|bos|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# Assistant turns sit inside {% generation %} so TRL's assistant-only loss can find them; the EOS is
# part of the generation so the model learns to stop.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|eos|>{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

GENERIC_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Fine-tuning adapts a pretrained language model to a task with a small dataset.",
    "Preference optimisation prefers the chosen answer over the rejected one.",
    "Reward models score responses; policies learn to earn higher rewards.",
    "0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ' \" ( ) [ ] { } - + * / = < > @ # % & _",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


def build_tokenizer(vocab_size: int = 512):
    """Train a byte-level BPE tokenizer on the demo corpus and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, BOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_for_tokenizer() + GENERIC_TEXT * 5, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        additional_special_tokens=ROLE_TOKENS,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.padding_side = "right"
    return wrapped


def make_tiny_model(
    directory: str | os.PathLike,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Save a random-weight tiny Llama and its tokenizer in Hugging Face format under `directory`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "ALIGND_TINY").write_text(
        f"hidden_size={hidden_size} num_layers={num_layers} num_heads={num_heads} seed={seed}\n"
    )
    return directory


def default_tiny_model_dir() -> Path:
    """Where the built-in tiny model is cached (``$ALIGND_HOME/models/alignd-tiny``)."""
    home = Path(os.environ.get("ALIGND_HOME", Path.home() / ".alignd")).expanduser()
    return home / "models" / TINY_MODEL_NAME


def resolve_model_path(name_or_path: str) -> str:
    """Map the built-in name to its folder, building the model on first use; pass others through."""
    if name_or_path != TINY_MODEL_NAME:
        return name_or_path
    directory = default_tiny_model_dir()
    if not (directory / "ALIGND_TINY").exists():
        # Built in a sibling folder and renamed, so a crash never leaves a half-written model.
        staging = directory.with_name(f".{directory.name}.{os.getpid()}")
        make_tiny_model(staging, hidden_size=DEMO_HIDDEN_SIZE, num_layers=DEMO_LAYERS)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(directory)
        except OSError:  # another process won the race; its copy is as good as ours
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return str(directory)


# The built-in model is a little wider than the test default so the demo learns in minutes.
DEMO_HIDDEN_SIZE = 128
DEMO_LAYERS = 4
