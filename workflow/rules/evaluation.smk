# Stage 'evaluation': benchmarks, generation, grading, Tables 1 and 2 (paper §2).
#
# Generation is split from grading: a generation job writes raw completions to
# eval/generations/{engine}/ and cheap per-benchmark grading jobs read them, so
# a grader change never reruns generation. With backend vllm one engine (one
# job) serves the base and every LoRA variant through LoRARequest and the full
# fine-tune, a different model, gets a second engine; with backend hf each
# variant is its own job, so a local or SLURM run generates them in parallel.
# Generation is a command (python -m lorascope.evaluation), not a script:
# vLLM runs in its own interpreter (eval.vllm.python) and spawns its engine.

EVAL = config["eval"]
BENCHMARKS = EVAL["benchmarks"]
LORA_VARIANTS = ["rank1", "rank1-attn-ablated", "rank1-mlp-ablated"]

if EVAL["backend"] == "vllm":
    ENGINES = {"base-and-loras": ["base", *LORA_VARIANTS], "full": ["full"]}
else:
    ENGINES = {v: [v] for v in VARIANTS}
ENGINE_OF = {v: e for e, vs in ENGINES.items() for v in vs}


wildcard_constraints:
    engine="|".join(ENGINES),
    table="table1|table2",


rule bench_prepare:
    input:
        source=bench_source,
    output:
        bench=res("data/bench/{benchmark}.parquet"),
    log:
        log_("eval/bench_prepare_{benchmark}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        eval=bench_settings,
        toy_dir=res("toy/bench"),
        code=code_of("eval_bench.py"),
    script:
        "../scripts/eval_bench.py"


rule eval_generate:
    input:
        unpack(engine_inputs),
    output:
        generations=directory(res("eval/generations/{engine}")),
    log:
        log_("eval/eval_generate_{engine}.log"),
    conda:
        "../../envs/vllm.yaml"
    params:
        python=generation_python,
        spec=generation_spec,
        code=code_of("lorascope.evaluation"),
    shell:
        "{params.python} -m lorascope.evaluation --spec {params.spec.as_json:q}"
        " --bench {input.bench:q} --out {output.generations:q} > {log:q} 2>&1"


rule eval_grade:
    input:
        bench=res("data/bench/{benchmark}.parquet"),
        generations=generations_of,
    output:
        samples=res("eval/{variant}/{benchmark}.parquet"),
    log:
        log_("eval/eval_grade_{variant}_{benchmark}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        fallback=setting("eval.grade_without_answer_marker"),
        timeout_s=setting("eval.grade_timeout_s"),
        code=code_of("eval_grade.py"),
    script:
        "../scripts/eval_grade.py"


rule eval_summary:
    input:
        samples=expand(
            res("eval/{{variant}}/{benchmark}.parquet"), benchmark=BENCHMARKS
        ),
    output:
        summary=res("eval/{variant}/summary.json"),
    log:
        log_("eval/eval_summary_{variant}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("eval_summary.py"),
    script:
        "../scripts/eval_summary.py"


rule eval_table:
    input:
        unpack(table_model_inputs),
        samples=table_inputs,
    output:
        table=res("tables/{table}.parquet"),
        markdown=res("tables/{table}.md"),
    log:
        log_("eval/eval_table_{table}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        eval=eval_keys("bootstrap_samples", "ci", "think_prefill"),
        seed=setting("seed"),
        base=base_model_path,
        revision=setting("model.revision"),
        code=code_of("eval_table.py"),
    script:
        "../scripts/eval_table.py"
