"""The converted model against its sources: the GGUF's own tensors, and a reference
forward pass (transformers, float32) agreeing with the engine's greedy tokens."""

from __future__ import annotations

import json
import subprocess

import aiohttp
import pytest

from concilium.serving._engine_install import ENGINE_MODEL_PACKAGE
from concilium.serving.engine import EngineHome

PROMPT = "The capital of France is"
TOKENS = 8

# Runs in the engine's environment (torch, transformers, gguf); prints one JSON line.
REFERENCE = """
import json, sys
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors import safe_open
from transformers import AutoTokenizer, Gemma3ForCausalLM
import {package} as package

gguf_path, model_dir, prompt, tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
package.assemble(gguf_path)
gguf = {{t.name: t for t in GGUFReader(gguf_path).tensors}}
raw = gguf["output_norm.weight"]
stored = torch.from_numpy(dequantize(raw.data, raw.tensor_type).copy()).float()
with safe_open(model_dir + "/model.safetensors", "pt") as f:
    names = sorted(f.keys())
    norm = f.get_tensor("model.norm.weight").float()
    shapes = {{n: list(f.get_slice(n).get_shape()) for n in ("model.embed_tokens.weight",
              "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight")}}
model, info = Gemma3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
ids = tokenizer(prompt, return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
print(json.dumps({{
    "tensors": len(names), "gguf_tensors": len(gguf), "shapes": shapes,
    "stored_norm_mean": stored.mean().item(), "norm_shift_error": (norm - (stored - 1)).abs().max().item(),
    "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
    "prompt_ids": ids[0].tolist(), "greedy": out[0, ids.shape[1]:].tolist(),
}}))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = EngineHome()
    gguf = tmp_path_factory.mktemp("gguf") / "model.gguf"
    script = REFERENCE.format(package=ENGINE_MODEL_PACKAGE)
    done = subprocess.run(
        [str(home.python), "-c", script, str(gguf), str(home.model_dir), PROMPT, str(TOKENS)],
        capture_output=True, text=True, timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_gguf_tensor_lands_under_a_transformers_name_with_its_shape(reference: dict) -> None:
    assert reference["tensors"] == reference["gguf_tensors"]
    # nothing missing but the tied output head; nothing unexpected
    assert [k for k in reference["missing"] if k != "lm_head.weight"] == [] and reference[
        "unexpected"
    ] == []
    assert reference["shapes"] == {
        "model.embed_tokens.weight": [262144, 640],
        "model.layers.0.self_attn.q_proj.weight": [1024, 640],  # 4 heads x 256
        "model.layers.0.mlp.down_proj.weight": [640, 2048],
    }


def test_norm_weights_are_shifted_back_by_one(reference: dict) -> None:
    assert reference["stored_norm_mean"] > 0.5  # llama.cpp stores 1 + w
    assert reference["norm_shift_error"] < 0.02  # converted = stored - 1 (bf16 rounding)


def test_the_converted_config_has_what_the_gguf_lacks() -> None:
    config = json.loads((EngineHome().model_dir / "config.json").read_text())
    assert [i for i, t in enumerate(config["layer_types"]) if t == "full_attention"] == [5, 11, 17]
    assert config["rope_local_base_freq"] == 10_000.0 and config["eos_token_id"] == [1, 106]


async def test_engine_greedy_tokens_match_the_reference_forward_pass(
    engine, reference: dict
) -> None:
    assert reference["prompt_ids"][0] == 2  # the tokenizer adds <bos>
    body = {"model": "gemma-3-270m", "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0.0,
            "logprobs": 1, "return_tokens_as_token_ids": True}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{engine.urls[0]}/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.json()
    engine_ids = [
        int(t.removeprefix("token_id:")) for t in data["choices"][0]["logprobs"]["tokens"]
    ]
    # bf16 on the engine vs float32 here: the first tokens must agree exactly
    assert engine_ids[:5] == reference["greedy"][:5], (engine_ids, reference["greedy"])
