"""HF generation: batched == one at a time, stop/truncation bookkeeping."""

import pytest
import torch
from conftest import make_tiny_qwen
from transformers import Qwen2ForCausalLM

from lorascope.core.chat import split_completion
from lorascope.core.decoding import (
    _finish,
    build_prompts,
    generate_hf,
    stop_token_ids,
)
from lorascope.evaluation.generation import generate_vllm
from lorascope.toy.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return make_tiny_qwen(
        len(tok), max_position_embeddings=256, tie_word_embeddings=False
    )


PROBLEMS = ["1+1", "What is 4821 + 1177?", "Add 12 and 30, please.", "9+99"]


def test_batched_left_padded_equals_one_at_a_time(model, tok):
    """float64, so that summation-order differences between the batched and the
    single forward (~1e-15, tests/numerics.py) cannot flip a greedy argmax
    between near-tied logits of the random model on any CPU."""
    model = make_tiny_qwen(
        len(tok), max_position_embeddings=256, tie_word_embeddings=False
    ).to(torch.float64)
    prompts = build_prompts(tok, PROBLEMS)
    batched = generate_hf(model, tok, prompts, max_new_tokens=12, batch_size=4)
    single = generate_hf(model, tok, prompts, max_new_tokens=12, batch_size=1)
    assert batched == single
    assert all(c.n_generated_tokens <= 12 for c in batched)


def test_completion_text_is_the_generated_tokens(model, tok):
    prompts = build_prompts(tok, PROBLEMS[:2])
    for comp in generate_hf(model, tok, prompts, max_new_tokens=10, batch_size=2):
        ids = tok(comp.text, add_special_tokens=False)["input_ids"]
        expected = comp.n_generated_tokens - (0 if comp.truncated else 1)
        assert len(ids) == expected
        assert comp.truncated == (comp.n_generated_tokens == 10)


def test_finish_cuts_at_the_first_stop_token(tok):
    stops = set(stop_token_ids(tok))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stops
    body = tok("x\n<|im_start|>answer\nAnswer: 42", add_special_tokens=False)[
        "input_ids"
    ]
    done = _finish(tok, body + [im_end, 5, 6], stops, limit=64)
    assert done.text == "x\n<|im_start|>answer\nAnswer: 42"
    assert done.n_generated_tokens == len(body) + 1 and not done.truncated
    assert split_completion(done.text)[1] == "42"
    cut = _finish(tok, body[:5], stops, limit=5)
    assert cut.truncated and cut.n_generated_tokens == 5


def test_generation_reuses_a_hook_modified_model(model, tok):
    """Steering passes a model with forward hooks; the same function serves it."""
    prompts = build_prompts(tok, PROBLEMS[:2])
    plain = generate_hf(model, tok, prompts, max_new_tokens=8, batch_size=2)

    def push(module, args, output):
        return output + 5.0 * torch.ones_like(output)

    handle = model.model.layers[1].mlp.register_forward_hook(push)
    try:
        steered = generate_hf(model, tok, prompts, max_new_tokens=8, batch_size=2)
    finally:
        handle.remove()
    assert steered != plain
    assert generate_hf(model, tok, prompts, max_new_tokens=8, batch_size=2) == plain


def test_vllm_missing_is_a_clear_error(tok):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(
        RuntimeError, match="eval.backend is 'vllm'.*set eval.backend: hf"
    ):
        generate_vllm("m", tok, ["p"], {"base": None}, max_new_tokens=4, vllm_cfg={})


def test_bad_arguments_fail_clearly(model, tok):
    with pytest.raises(ValueError, match="batch_size"):
        generate_hf(model, tok, ["x"], max_new_tokens=4, batch_size=0)


def test_generate_benchmarks_hf_variants_and_pointer(model, tok, tmp_path):
    import json

    import polars as pl
    from peft import LoraConfig, get_peft_model

    from lorascope.core.models import resolve_model_dir
    from lorascope.evaluation.generation import generate_benchmarks

    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    lora = LoraConfig(
        r=1, target_modules=["q_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(Qwen2ForCausalLM.from_pretrained(base), lora).save_pretrained(
        tmp_path / "adapter"
    )
    pointer = tmp_path / "full"
    pointer.mkdir()
    (pointer / "POINTER.json").write_text(
        json.dumps({"model": str(base), "revision": None})
    )
    assert resolve_model_dir(pointer) == (str(base), None)

    bench = {"t": pl.DataFrame({"id": ["x", "y"], "problem": ["1+1", "22+3"]})}
    eval_cfg = {"backend": "hf", "max_new_tokens": 6, "batch_size": 2}
    model_cfg = {"dtype": "float32", "attn_implementation": "sdpa"}
    models = {
        "base": (str(base), None),
        "rank1": (str(base), str(tmp_path / "adapter")),
        "full": (str(pointer), None),
    }
    out = generate_benchmarks(models, tok, bench, eval_cfg, model_cfg)
    df = out["base"]["t"]
    assert df.columns == [
        "id",
        "prompt",
        "completion",
        "n_generated_tokens",
        "truncated",
    ]
    assert df["id"].to_list() == ["x", "y"]
    assert df["prompt"][0].endswith("<|im_start|>think\n")
    # the pointer resolves to the same weights as the base; the LoRA changes them
    assert out["full"]["t"].equals(df)
    assert not out["rank1"]["t"]["completion"].equals(df["completion"])
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        generate_benchmarks(
            models, tok, bench, eval_cfg | {"backend": "tgi"}, model_cfg
        )


@pytest.mark.gpu
def test_vllm_one_engine_serves_base_and_lora_like_hf(tok, tmp_path):
    """On a GPU with vllm: base + LoRA from one engine, greedy as in hf."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from peft import LoraConfig, get_peft_model

    # head_dim 64: a size every vLLM attention backend takes
    gpu_model = make_tiny_qwen(
        len(tok),
        hidden=128,
        intermediate_size=256,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
    )
    base = tmp_path / "base"
    gpu_model.save_pretrained(base)
    tok.save_pretrained(base)
    lora = LoraConfig(
        r=1,
        lora_alpha=16,
        use_rslora=True,
        init_lora_weights=False,
        target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
    )
    get_peft_model(Qwen2ForCausalLM.from_pretrained(base), lora).save_pretrained(
        tmp_path / "adapter"
    )
    prompts = build_prompts(tok, PROBLEMS)
    vcfg = {
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.3,
        "max_lora_rank": 8,
        "max_loras": 2,
    }
    out = generate_vllm(
        str(base),
        tok,
        prompts,
        {"base": None, "rank1": str(tmp_path / "adapter")},
        max_new_tokens=16,
        vllm_cfg=vcfg,
        dtype="float32",
    )
    hf = generate_hf(
        Qwen2ForCausalLM.from_pretrained(base).cuda().eval(),
        tok,
        prompts,
        max_new_tokens=16,
        batch_size=4,
        progress=False,
    )
    assert [c.text for c in out["base"]] == [c.text for c in hf]
    assert [c.text for c in out["rank1"]] != [c.text for c in out["base"]]
