# Stage 'steering': a sweep that pushes components / SAE features and measures
# KL, backtracking and accuracy (the paper's open question in its limitations).


rule steering_sweep:
    input:
        unpack(steering_sae_inputs),
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        kl_components=res("ablation/kl_components.parquet"),
        bench=res(f"data/bench/{steering_benchmark()}.parquet"),
        base=base_model_input,
    output:
        sweep=res("steering/sweep.parquet"),
        sweep_md=res("steering/sweep.md"),
    log:
        log_("steering/steering_sweep.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=steering_params,
        base=base_model_path,
        code=code_of("steering_sweep.py"),
    script:
        "../scripts/steering_sweep.py"
