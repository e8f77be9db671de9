"""HF generation: batched == one at a time, stop/truncation bookkeeping, the
context budget, greedy whatever the model's generation config says. (The
vLLM backend is tested against this decode in test_vllm.py.)"""

import json
import shutil

import pytest
import torch
from conftest import make_tiny_qwen
from transformers import Qwen2ForCausalLM

from lorascope.core.chat import split_completion
from lorascope.core.decoding import (
    build_prompts,
    context_length,
    finish,
    generate_hf,
    stop_token_ids,
    token_budgets,
)
from lorascope.evaluation.vllm_engine import generate_vllm
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
    single forward (~1e-15, tests/support/numerics.py) cannot flip a greedy argmax
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
    done = finish(tok, body + [im_end, 5, 6], stops, limit=64)
    assert done.text == "x\n<|im_start|>answer\nAnswer: 42"
    assert done.n_generated_tokens == len(body) + 1 and not done.truncated
    assert split_completion(done.text)[1] == "42"
    cut = finish(tok, body[:5], stops, limit=5)
    assert cut.truncated and cut.n_generated_tokens == 5
    # Ids past the budget (padding after a row stopped) are never read.
    assert finish(tok, body[:5] + [im_end], stops, limit=5) == cut


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


def test_vllm_missing_is_a_clear_error(tok, tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(RuntimeError, match="eval.backend is 'vllm'.*eval.vllm.python"):
        one_vllm_prompt(tok, tiny_model_dir, None, None)


def one_vllm_prompt(tok, model_dir, in_process, tensor_parallel_size, device="cpu"):
    """generate_vllm on one prompt of the base model."""
    vllm_cfg = {"in_process": in_process, "tensor_parallel_size": tensor_parallel_size}
    return generate_vllm(
        str(model_dir), tok, {"base": ["p"]}, {"base": None},
        max_new_tokens=4, vllm_cfg=vllm_cfg, device=device,
    )  # fmt: skip


@pytest.mark.parametrize("in_process,device", [(True, "cuda"), (None, "cpu")])
def test_vllm_in_process_cannot_shard(tok, tiny_model_dir, in_process, device):
    """One in-process worker cannot hold a tensor-parallel engine: the job
    says so before vLLM is imported (so here, without vLLM, too)."""
    with pytest.raises(ValueError, match="in_process.*tensor_parallel_size is 2"):
        one_vllm_prompt(tok, tiny_model_dir, in_process, 2, device)


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
    eval_cfg = {
        "backend": "hf",
        "max_new_tokens": 6,
        "batch_size": 2,
        "context_length": None,
        "think_prefill": "all",
        "budget_forcing": {"enabled": False},
    }
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
    # not_base: the base is asked with the plain chat template, the others
    # with the think marker; the tuned variants' completions do not change.
    plain = generate_benchmarks(
        models, tok, bench, eval_cfg | {"think_prefill": "not_base"}, model_cfg
    )
    assert plain["base"]["t"]["prompt"][0].endswith("<|im_start|>assistant\n")
    assert plain["rank1"]["t"].equals(out["rank1"]["t"])


def test_token_budgets_share_the_context():
    assert token_budgets([10, 50, 90], 64, context=100) == [64, 50, 10]
    with pytest.raises(ValueError, match="aime24 problem '7'.*100 tokens.*is 100"):
        token_budgets([10, 100], 64, 100, names=["a", "aime24 problem '7'"])
    cfg = make_tiny_qwen(40).config
    assert context_length(cfg) == 512
    assert context_length(cfg, 300) == 300
    with pytest.raises(ValueError, match="context_length 600 exceeds.*512"):
        context_length(cfg, 600)


def test_hf_each_prompt_generates_what_fits_in_the_context(tok):
    """A model with fewer positions than prompt + max_new_tokens: each row of
    a batch stops at its own budget, exactly as if generated alone with
    max_new_tokens = its budget (float64: no near-tie can flip the argmax)."""
    small = make_tiny_qwen(
        len(tok), max_position_embeddings=64, tie_word_embeddings=False
    ).to(torch.float64)
    prompts = build_prompts(
        tok,
        [
            "1+1",
            "What is 12 + 34 + 56 + 78 + 90 + 12 + 34?",
            "What is 12 + 34 + 56 + 78 + 90 + 12 + 34 + 56 + 78?",
        ],
    )
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    budgets = [min(30, 64 - n) for n in lengths]
    assert len(set(budgets)) == 3 and max(budgets) == 30  # both limits bind
    batched = generate_hf(small, tok, prompts, max_new_tokens=30, batch_size=3)
    for prompt, budget, got in zip(prompts, budgets, batched, strict=True):
        alone = generate_hf(small, tok, [prompt], max_new_tokens=budget)
        assert got == alone[0]
        assert got.n_generated_tokens <= budget
        assert got.truncated == (got.n_generated_tokens == budget)
    long = ["What is " + " + ".join(["1234"] * 40) + "?"]
    with pytest.raises(ValueError, match="problem 'q9': the prompt has"):
        generate_hf(small, tok, long, max_new_tokens=4, names=["problem 'q9'"])


def sampling_model_dir(src, dst):
    """A copy of a model dir whose generation_config.json asks for sampling
    with a repetition penalty, as Qwen2.5's does."""
    shutil.copytree(src, dst)
    path = dst / "generation_config.json"
    gen = json.loads(path.read_text())
    gen |= {
        "do_sample": True,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
    path.write_text(json.dumps(gen))
    return dst


def test_hf_greedy_ignores_the_models_generation_config(tok, tmp_path):
    """Weights saved with Qwen2.5-style sampling defaults decode exactly like
    the same weights with a clean config, and their config is left as it
    was. The random float64 model is flat enough that the inherited 1.05
    repetition penalty alone changes its greedy output (checked first), so
    the comparison has power; float64 keeps near-ties from deciding."""
    from lorascope.core.models import load_causal_lm

    clean_dir = tmp_path / "clean"
    make_tiny_qwen(len(tok), tie_word_embeddings=False).to(
        torch.float64
    ).save_pretrained(clean_dir)
    dirty_dir = sampling_model_dir(clean_dir, tmp_path / "sampling")
    prompts = build_prompts(tok, PROBLEMS)
    models = {
        name: load_causal_lm(str(path), dtype="float32").to(torch.float64)
        for name, path in (("clean", clean_dir), ("dirty", dirty_dir))
    }
    ids = tok(prompts[:1], return_tensors="pt")["input_ids"]
    plain, penalised = (
        models["clean"].generate(
            ids, do_sample=False, max_new_tokens=24, repetition_penalty=p
        )
        for p in (1.0, 1.05)
    )
    assert not torch.equal(plain, penalised), "the test model ignores the penalty"
    out = {}
    for name, model in models.items():
        torch.manual_seed(0)  # sampling, if it happened, would draw from here
        out[name] = generate_hf(model, tok, prompts, max_new_tokens=24)
    assert models["dirty"].generation_config.do_sample is True  # restored
    assert out["dirty"] == out["clean"]


def test_tensor_parallel_follows_the_jobs_gpus():
    from lorascope.evaluation.job import tensor_parallel

    assert tensor_parallel(None, 4) == 4 and tensor_parallel(None, 0) == 1
    assert tensor_parallel(2, 0) == 2 and tensor_parallel(4, 4) == 4
    with pytest.raises(ValueError, match="tensor_parallel_size is 2 but the job has 4"):
        tensor_parallel(2, 4)
