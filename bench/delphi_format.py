"""Our fuzzing and simulation scorers against EleutherAI's eai-delphi 0.1.3
on the same inputs (issue 29; docs/ground-truth.md, "eai-delphi").

Usage (delphi in a scratch folder, nothing installed into the project's
environments):

    .venv/bin/python -m pip install --no-deps --target /tmp/delphi \\
        eai-delphi==0.1.3 tiktoken orjson blobfile pycryptodomex lxml
    DELPHI_SITE=/tmp/delphi PYTHONPATH=src .venv/bin/python \\
        bench/delphi_format.py [results/toy/features/sae/contexts.parquet]

`import delphi.scorers` fails without vLLM (delphi.clients.offline imports
it at module level) and every scorer module imports `delphi.latents`
(faiss, via its constructors). This script loads delphi's own scorer
modules anyway, by registering `delphi.latents`, `delphi.clients` and
`delphi.scorers` as bare packages (their `__init__` files, which pull in
vLLM/faiss/sentence-transformers, are skipped), then, for the held-out
windows our scorers build from the same contexts (default: synthetic ones):

- fuzzing: delphi's `_prepare_text` marks the same tokens as ours
  (`format_highlighted`, threshold 0.3 of the window's max); its decoy count
  (`mean_n_activations_ceil`: non-zero activations) against ours (active
  tokens); its `_parse` and our `parse_numbers` read the same decisions;
  its `compute_classification_metrics` (taken from `delphi/log/
  result_analysis.py`, whose module imports plotly) gives our balanced
  accuracy;
- simulation: delphi's `simulate_and_score` on our predictions (a stub
  simulator returning them) gives our correlation; and its JSON-mode parser
  turns a malformed reply into zeros (ours records a failure).

Prints one line per check and exits 1 if any disagrees.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lorascope.autointerp.explain import trim_window
from lorascope.autointerp.prompts import (
    format_highlighted,
    load_templates,
    parse_numbers,
)
from lorascope.autointerp.scorers import (
    FUZZING,
    SIMULATION,
    correlation,
    fuzz_windows,
    simulation_windows,
)
from lorascope.autointerp.scoring import balanced_accuracy
from lorascope.autointerp.split import split_contexts
from lorascope.core.feature_tables import contexts_by_feature

SPLIT = {"n_quantiles": 5, "n_score": 10, "explain_from": "quantiles"}
FUZZ = {"n_examples": 10, "threshold": 0.3, "window": 16}
SIM = {"n_contexts": 5, "window": 16}


def load_delphi(site: Path) -> dict:
    """delphi's scorer modules without its package __init__ files."""
    sys.path.insert(0, str(site))
    import delphi  # its own __init__ only sets up a logger

    root = Path(delphi.__file__).parent
    for pkg in ("latents", "clients", "scorers"):
        bare = types.ModuleType(f"delphi.{pkg}")
        bare.__path__ = [str(root / pkg)]
        sys.modules[f"delphi.{pkg}"] = bare
    latents = importlib.import_module("delphi.latents.latents")
    for name in ("ActivatingExample", "NonActivatingExample", "LatentRecord"):
        setattr(sys.modules["delphi.latents"], name, getattr(latents, name))
    client = importlib.import_module("delphi.clients.client")
    fuzz = importlib.import_module("delphi.scorers.classifier.fuzz")
    sample = importlib.import_module("delphi.scorers.classifier.sample")
    sim = importlib.import_module("delphi.scorers.simulator.simulation")
    models = importlib.import_module("delphi.scorers.simulator.simulation.data_models")
    # compute_classification_metrics, without result_analysis's plotly import
    src = (root / "log" / "result_analysis.py").read_text()
    fn = next(
        n for n in ast.parse(src).body
        if isinstance(n, ast.FunctionDef) and n.name == "compute_classification_metrics"
    )  # fmt: skip
    scope: dict = {}
    exec(compile(ast.Module([fn], []), "result_analysis.py", "exec"), scope)
    return {
        "version": importlib.metadata.version("eai-delphi"),
        "latents": latents, "client": client, "fuzz": fuzz, "sample": sample,
        "sim": sim, "models": models,
        "metrics": scope["compute_classification_metrics"],
    }  # fmt: skip


def synthetic_contexts(n_features=6, n_ctx=40, width=20, seed=0) -> pl.DataFrame:
    """Windows with a few active tokens each; feature f fires on word f."""
    rng = np.random.default_rng(seed)
    words = [" the", " cat", " Wait", ",", " 3", " +", " so", "\n", " of", " 12"]
    rows = []
    for f in range(n_features):
        for r in range(n_ctx):
            toks = [words[i] for i in rng.integers(0, len(words), 2 * width + 1)]
            toks[width] = words[f % len(words)]
            acts = np.where(rng.random(len(toks)) < 0.7, 0.0, rng.random(len(toks)))
            acts[width] = 5.0 - 0.1 * r
            rows.append({"feature": f, "rank": r, "doc": r, "pos": 100 + r,
                         "value": float(acts[width]), "tokens": toks,
                         "acts": acts.tolist(), "center": width,
                         "source": "top"})  # fmt: skip
    return pl.DataFrame(rows)


def main() -> int:
    site = os.environ.get("DELPHI_SITE")
    if not site:
        sys.exit("set DELPHI_SITE to the folder eai-delphi was installed into")
    d = load_delphi(Path(site))
    print(f"eai-delphi {d['version']} scorer modules loaded from {site}")
    path = sys.argv[1] if len(sys.argv) > 1 else None
    contexts = pl.read_parquet(path) if path else synthetic_contexts()
    by_feature = contexts_by_feature(contexts, sample=True)  # as autointerp_score
    fids = sorted(by_feature)[:50]
    checks: dict[str, list[bool]] = {}
    n_marks: list[tuple[int, int]] = []
    template = load_templates(None, ["fuzz"])["fuzz"]

    def check(name, ok):
        checks.setdefault(name, []).append(bool(ok))

    A, Sample = d["latents"].ActivatingExample, d["sample"]
    for fid in fids:
        held = split_contexts(by_feature[fid], SPLIT, 0, fid)[1]
        if len(held) < 2:
            continue
        text = '"' + by_feature[fid][0]["tokens"][by_feature[fid][0]["center"]].strip()
        explanation = f'token {text}"'
        # -- fuzzing: marks, decoy count, parse, balanced accuracy ----------
        ours = fuzz_windows(held, FUZZ, FUZZ["window"], 0, fid)
        true = [w for w in ours if w["label"]]
        # the windows fuzz_windows shows truly marked (even places), as delphi
        # builds them: ActivatingExample -> _prepare_text(n_incorrect=0)
        cut = [trim_window(c, FUZZ["window"]) for c in held[: FUZZ["n_examples"]]]
        examples = [
            A(tokens=torch.arange(len(c["tokens"])),
              activations=torch.tensor(c["acts"], dtype=torch.float32),
              str_tokens=list(c["tokens"]))
            for c in cut[0::2]
        ]  # fmt: skip
        theirs = sorted(
            Sample._prepare_text(ex, 0, FUZZ["threshold"], True)[0].replace(
                "\n", "\\n")
            for ex in examples
        )  # fmt: skip
        mine = sorted(format_highlighted(w["tokens"], w["marked"]) for w in true)
        for a, b in zip(theirs, mine, strict=True):
            check("fuzzing: same tokens marked as delphi's _prepare_text", a == b)
        scorer = d["fuzz"].FuzzingScorer(client=None, n_examples_shown=len(ours))
        # decoy marks: delphi counts non-zero activations, we count active
        # tokens (dense LoRA scalars are non-zero almost everywhere)
        n_ours = math.ceil(np.mean([len(w["marked"]) for w in true]))
        n_marks.append((scorer.mean_n_activations_ceil(examples), n_ours))
        # the prompts: every truly marked window delphi would show is in ours
        samples = Sample.examples_to_samples(examples, 0, FUZZ["threshold"], True)
        their_prompt = scorer._build_prompt(explanation, samples)[-1]["content"]
        our_prompt = FUZZING.prompt(template, explanation, ours)
        our_lines = our_prompt.splitlines()
        for i, smp in enumerate(samples):
            # delphi writes raw newlines inside a window; we show them as \n
            # so that each window stays on its own numbered line
            assert f"Example {i}: {smp.text}" in their_prompt
            shown = smp.text.replace("\n", "\\n")
            check("fuzzing: delphi's prompt windows are in ours",
                  any(ln.split(". ", 1)[-1] == shown for ln in our_lines))  # fmt: skip
        if fid == fids[0]:
            print("delphi fuzz prompt (last message):\n" + their_prompt[:400])
            print("ours:\n" + our_prompt[:600])
        pred = FUZZING.offline(explanation, ours)
        listing = "[" + ",".join(str(int(p)) for p in pred) + "]"
        reply = json.dumps({"correct": [k + 1 for k, p in enumerate(pred) if p]})
        read = parse_numbers(len(ours), "correct")(reply)
        check("fuzzing: delphi's _parse and ours read the same decisions",
              scorer._parse(listing)[0] == read)  # fmt: skip
        labels = [w["label"] for w in ours]
        y, p = np.array(labels), np.array(pred)
        conf = {"true_positives": int((y & p).sum()),
                "true_negatives": int((~y & ~p).sum()),
                "false_positives": int((~y & p).sum()),
                "false_negatives": int((y & ~p).sum()),
                "total_examples": len(y), "total_positives": int(y.sum()),
                "total_negatives": int((~y).sum())}  # fmt: skip
        mine_ba = balanced_accuracy(labels, pred)["balanced_accuracy"]
        check("fuzzing: delphi's balanced accuracy equals ours",
              math.isclose(d["metrics"](conf)["accuracy"], mine_ba))  # fmt: skip
        # -- simulation: correlation over the concatenated windows ----------
        sw = simulation_windows(held, SIM, SIM["window"])
        guess = SIMULATION.offline(explanation, sw)
        ours_r = correlation([w["acts"] for w in sw], guess)

        class Replay:  # delphi's simulator interface, answering our predictions
            def __init__(self, answers):
                self.answers = list(answers)

            async def simulate(self, tokens):
                return self.answers.pop(0)

        record = d["models"].ActivationRecord
        records = [record(w["tokens"], w["acts"], 0) for w in sw]
        agg = asyncio.run(d["sim"].simulate_and_score(Replay(guess), records))
        score = agg[0].ev_correlation_score  # "nan" when undefined
        theirs_r = float("nan") if score == "nan" else float(score)
        same = (ours_r is None and math.isnan(theirs_r)) or (
            ours_r is not None and math.isclose(ours_r, theirs_r, abs_tol=1e-9)
        )
        check("simulation: delphi's simulate_and_score r equals ours", same)
    # delphi JSON-mode simulation on a malformed reply: zeros (ours: failed)
    sim = d["sim"].NeuronSimulator(None, "x", use_logprobs=False)
    bad = d["client"].Response(text="not json")
    zeros = sim._parse_json_response(bad, ["a", "b", "c"])
    print(f"delphi JSON simulation parses a malformed reply as {zeros} "
          "(ours: status failed, the reply kept, no score)")  # fmt: skip
    n_d, n_o = np.mean(n_marks, axis=0)
    print(f"fuzzing decoy marks per window, mean over features: delphi "
          f"(non-zero acts) {n_d:.1f}, ours (>= threshold) {n_o:.1f}")  # fmt: skip
    failed = False
    for name, oks in checks.items():
        print(f"{name}: {sum(oks)}/{len(oks)}")
        failed |= not all(oks)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
