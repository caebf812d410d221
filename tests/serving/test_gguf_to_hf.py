"""The GGUF -> Hugging Face converter's pure parts (names, config, chat template).

The converter itself runs in the engine's environment (gguf, torch); these tests
check the decisions that broke the output until fixed, without that environment.
"""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from concilium.serving import _gguf_to_hf as conv


def test_tensor_names_map_to_transformers_gemma3() -> None:
    assert conv.hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert (
        conv.hf_name("blk.17.post_ffw_norm.weight")
        == "model.layers.17.post_feedforward_layernorm.weight"
    )
    assert (
        conv.hf_name("blk.0.ffn_norm.weight") == "model.layers.0.pre_feedforward_layernorm.weight"
    )
    assert conv.hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert conv.hf_name("output_norm.weight") == "model.norm.weight"
    assert conv.is_norm("blk.1.attn_k_norm.weight") and not conv.is_norm("blk.1.attn_k.weight")


class _Field:
    def __init__(self, value):
        self.value = value
        self.data = value if isinstance(value, list) else [value]

    def contents(self):
        return self.value


def test_config_fills_in_what_the_gguf_lacks() -> None:
    meta = {
        "gemma3.block_count": 18, "gemma3.attention.key_length": 256, "gemma3.embedding_length": 640,
        "gemma3.feed_forward_length": 2048, "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1, "gemma3.attention.layer_norm_rms_epsilon": 1e-6,
        "gemma3.context_length": 32768, "gemma3.attention.sliding_window": 512,
        "gemma3.rope.freq_base": 1e6, "tokenizer.ggml.tokens": ["t"] * 262144,
        "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.padding_token_id": 0,
    }  # fmt: skip
    config = conv.config_from(SimpleNamespace(fields={k: _Field(v) for k, v in meta.items()}))
    full = [i for i, t in enumerate(config["layer_types"]) if t == "full_attention"]
    assert full == [5, 11, 17]  # every 6th layer attends globally
    assert config["rope_local_base_freq"] == 10_000.0 and config["rope_theta"] == 1e6
    assert config["eos_token_id"] == [1, 106]  # <eos> and <end_of_turn>
    assert config["vocab_size"] == 262144 and config["num_key_value_heads"] == 1


def _render(messages) -> str:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(conv.CHAT_TEMPLATE).render(
        messages=messages, bos_token="<bos>", add_generation_prompt=True
    )


def test_chat_template_folds_system_into_the_next_user_turn() -> None:
    text = _render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_chat_template_reads_content_parts_and_allows_any_order() -> None:
    text = _render(
        [
            {"role": "user", "content": [{"type": "text", "text": "one"}]},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "three"},
        ]
    )
    assert "user\none<end_of_turn>" in text and "user\ntwo<end_of_turn>" in text
    assert "<start_of_turn>model\nthree<end_of_turn>" in text
