"""The built-in `opentune/tiny-llama`: a 4-layer Llama with a byte-level tokenizer.

    cd trainer && python3 -m opentune_trainer init-tiny --out /tmp/tiny-llama   # files + weights
    cd trainer && python3 -m opentune_trainer tiny-files --out ../models/opentune/tiny-llama

The static files (config, tokenizer, chat template) are generated here and committed under
models/opentune/tiny-llama/; `init-tiny` copies them and writes seeded random weights that are
byte-identical on every machine. Token id = byte value (0–255), then five Llama-3 special tokens;
the vocabulary is padded to 320 rows so the embedding has a GPU-friendly size.
"""

from __future__ import annotations

import json
import os
import shutil

from . import safetensors_io as st
from .model import LlamaForCausalLM, ModelConfig, init_weights

STATIC_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "models", "opentune", "tiny-llama")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
BOS, EOT_TEXT, HEADER_START, HEADER_END, EOT = range(256, 261)
VOCAB_SIZE = 320

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "bos_token_id": BOS,
    "eos_token_id": EOT,
    "torch_dtype": "float32",
    "use_cache": True,
}

# Meta's Llama 3 Instruct template, verbatim
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (what ByteLevel pre-tokenizers use)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _added(i: int, content: str) -> dict:
    return {
        "id": i,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def tokenizer_json() -> dict:
    b2u = bytes_to_unicode()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    bos = {"SpecialToken": {"id": SPECIALS[0], "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added(256 + i, s) for i, s in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "Sequence",
            "processors": [  # like Llama 3: ByteLevel, then BOS
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                {
                    "type": "TemplateProcessing",
                    "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [
                        bos,
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": SPECIALS[0], "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}},
                    ],
                    "special_tokens": {SPECIALS[0]: {"id": SPECIALS[0], "ids": [BOS], "tokens": [SPECIALS[0]]}},
                },
            ],
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {b2u[b]: b for b in range(256)},
            "merges": [],
        },
    }


def tokenizer_config() -> dict:
    return {
        "added_tokens_decoder": {
            str(256 + i): {k: v for k, v in _added(256 + i, s).items() if k != "id"} for i, s in enumerate(SPECIALS)
        },
        "bos_token": SPECIALS[0],
        "eos_token": "<|eot_id|>",
        "pad_token": "<|end_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1024,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def static_files() -> dict[str, str]:
    """File name → exact text of every committed file of the tiny model."""

    def dump(obj):
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

    return {
        "config.json": dump(CONFIG),
        "generation_config.json": dump({"bos_token_id": BOS, "eos_token_id": [EOT_TEXT, EOT]}),
        "tokenizer.json": dump(tokenizer_json()),
        "tokenizer_config.json": dump(tokenizer_config()),
        "special_tokens_map.json": dump(
            {"bos_token": SPECIALS[0], "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>"}
        ),
    }


def write_static(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, text in static_files().items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write(text)


def init_tiny(out: str, seed: int = 0) -> None:
    """Static files (copied from the repo when present) + seeded weights as model.safetensors."""
    os.makedirs(out, exist_ok=True)
    if os.path.isfile(os.path.join(STATIC_DIR, "config.json")):
        for name in static_files():
            shutil.copyfile(os.path.join(STATIC_DIR, name), os.path.join(out, name))
    else:
        write_static(out)
    model = LlamaForCausalLM(ModelConfig.from_hf(CONFIG))
    init_weights(model, seed)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    st.save(sd, os.path.join(out, "model.safetensors"))


def encode(text: str) -> list:
    """The tokenizer's encoding of plain text (no specials): its UTF-8 bytes."""
    return list(text.encode("utf-8"))
