"""Convert the Gemma 3 270M GGUF into a Hugging Face folder vLLM can load.

This module runs inside the engine's own environment (``python _gguf_to_hf.py GGUF
OUT``): it imports only gguf, numpy, safetensors and transformers, never concilium.
What it must get right (each broke the output until fixed; see
``docs/engine.md#how-the-model-is-converted``):

* llama.cpp stores Gemma's RMSNorm weights as ``1 + w``; subtract 1 again;
* the GGUF lacks the layer pattern (every 6th layer full attention, the rest
  sliding), the local rope theta (10000) and the second stop token
  (``<end_of_turn>``); fill them in;
* the tokenizer must add ``<bos>`` (without it Gemma produces garbage);
* the base model has no chat template; ``CHAT_TEMPLATE`` renders Gemma's turn
  format, folds system messages into the next user turn, accepts content given as
  a list of parts, and does not insist on strict alternation.
"""

# Runs in the engine's own environment (torch, gguf, safetensors, transformers), which
# the core environment the type checker sees does not have.
# pyright: reportMissingImports=false

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# GGUF tensor name (after "blk.N.") -> transformers name (after "model.layers.N.")
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}
SLIDING_PATTERN = 6  # every 6th layer attends globally
LOCAL_ROPE_THETA = 10_000.0
END_OF_TURN_ID = 106

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\n') -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = ns.system + text + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if role == 'user' -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ text | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, index, kind = stem.split(".", 2)
        return f"model.layers.{index}.{LAYER_NAMES[kind]}.{suffix}"
    return f"{GLOBAL_NAMES[stem]}.{suffix}"


def is_norm(gguf_name: str) -> bool:
    return "norm" in gguf_name


def field(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def config_from(reader: Any) -> dict[str, Any]:
    """The transformers config, from GGUF metadata plus what the GGUF lacks."""
    layers = int(field(reader, "gemma3.block_count"))
    head_dim = int(field(reader, "gemma3.attention.key_length"))
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": int(field(reader, "gemma3.embedding_length")),
        "intermediate_size": int(field(reader, "gemma3.feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": int(field(reader, "gemma3.attention.head_count")),
        "num_key_value_heads": int(field(reader, "gemma3.attention.head_count_kv")),
        "head_dim": head_dim,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": float(field(reader, "gemma3.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(field(reader, "gemma3.context_length")),
        "sliding_window": int(field(reader, "gemma3.attention.sliding_window")),
        "layer_types": [
            "full_attention" if (i + 1) % SLIDING_PATTERN == 0 else "sliding_attention"
            for i in range(layers)
        ],
        "rope_theta": float(field(reader, "gemma3.rope.freq_base")),
        "rope_local_base_freq": LOCAL_ROPE_THETA,
        "rope_parameters": {
            "full_attention": {
                "rope_type": "default",
                "rope_theta": float(field(reader, "gemma3.rope.freq_base")),
            },
            "sliding_attention": {"rope_type": "default", "rope_theta": LOCAL_ROPE_THETA},
        },
        "hidden_activation": "gelu_pytorch_tanh",
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": [int(field(reader, "tokenizer.ggml.eos_token_id")), END_OF_TURN_ID],
        "pad_token_id": int(field(reader, "tokenizer.ggml.padding_token_id")),
        "tie_word_embeddings": True,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "torch_dtype": "bfloat16",
    }


def tensors_from(reader: Any) -> dict[str, Any]:
    """Dequantized float32 tensors under transformers names (norms shifted back)."""
    import numpy as np
    from gguf.quants import dequantize

    out = {}
    for tensor in reader.tensors:
        data = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))  # GGML lists dims innermost first
        data = data.reshape(shape)
        if is_norm(tensor.name):
            data = data - 1.0
        out[hf_name(tensor.name)] = data
    return out


def convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from gguf import GGUFReader
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    reader = GGUFReader(str(gguf_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config_from(reader)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": config["bos_token_id"],
                "eos_token_id": config["eos_token_id"],
                "pad_token_id": config["pad_token_id"],
            }
        )
    )
    tensors = {
        k: torch.from_numpy(v).to(torch.bfloat16).contiguous()
        for k, v in tensors_from(reader).items()
    }
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.add_bos_token = True
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: _gguf_to_hf.py MODEL.gguf OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"converted {sys.argv[1]} -> {sys.argv[2]}")
