"""Who answers the autointerp steps: one table, one class per provider.

`PROVIDERS` maps `autointerp.provider` (and `autointerp.categories.provider`)
to a `Provider` class; `provider_for(settings, section, cache_path)` builds
one. The rules' modules (explain, categories, scoring) call its five steps
(`explain`, `detect`, `judge`, `propose`, `assign`) and never name a provider
(`judge` answers a scorer of `scorers.py`: fuzzing, simulation):

- `Offline`: the statistics of `offline.py`, no calls, no key.
- `LLMProvider`: the prompts of `templates/` sent through `clients.LLMEngine`;
  one small subclass per SDK says its usual key variable, builds its client,
  sends one request and names its errors: `OpenAI` (any compatible
  base_url), `Anthropic`.

A new SDK is one `LLMProvider` subclass and one row here (plus its name in
the schema's `provider` enums). `lorascope.workflow.environment` reads the
key variables from this table. SDKs are imported on first use: the import
takes seconds that the offline explainer's jobs never need.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from typing import ClassVar

from lorascope.autointerp.cache import CachedReply
from lorascope.autointerp.clients import Outcome, run_prompts
from lorascope.autointerp.offline import (
    TAXONOMY,
    explain_offline,
    feature_stats,
    judge_offline,
)
from lorascope.autointerp.prompts import (
    format_activation_examples,
    format_marked,
    load_templates,
    parse_categories,
    parse_category_id,
    parse_detect,
    parse_explanation,
    parse_subcategories,
    render,
)
from lorascope.autointerp.settings import LLMSettings

__all__ = [
    "PROVIDERS",
    "Anthropic",
    "LLMProvider",
    "Offline",
    "OpenAI",
    "Provider",
    "provider_for",
]

Results = tuple[dict, list[dict]]
"""(item -> `clients.Outcome`, usage rows) of one step."""


class Provider(ABC):
    """What every provider answers. Items are in feature order; an outcome's
    `value` is what the step records (None when it failed)."""

    key_env: ClassVar[str | None] = None
    """Its usual API-key variable (api_key_env null); None = no key needed."""
    fixed_taxonomy: ClassVar[bool] = False
    """Its categories are a fixed taxonomy only it can assign to."""

    def __init__(self, settings: LLMSettings, section: dict, cache_path):
        self.settings, self.section, self.cache_path = settings, section, cache_path

    @property
    def label(self) -> str:
        """What every output records in its `explainer` / `judge` column."""
        return f"{self.settings.provider}:{self.settings.model}"

    @abstractmethod
    def explain(self, step: str, items: list[tuple[int, list[dict]]]) -> Results:
        """(feature, shown contexts) -> {explanation, classification, reasoning}."""

    @abstractmethod
    def detect(self, step: str, items: list[tuple[int, str, list[dict]]]) -> Results:
        """(feature, explanation, windows) -> fires on each window (bools)."""

    @abstractmethod
    def judge(self, step: str, scorer, items: list[tuple[int, str, list]]) -> Results:
        """(feature, explanation, payload) -> a `scorers` scorer's prediction."""

    @abstractmethod
    def propose(self, sample: list[str], sae_sample: list[str]) -> Results:
        """({categories, summary[, sae_categories, sae_summary]}, usage) from
        the LoRA/MLP and the SAE explanation samples."""

    @abstractmethod
    def assign(self, step: str, items: list[tuple[dict, list[dict]]], choices, kind):
        """(explanation row, contexts) -> "category" or "category/subcategory";
        `choices`: (category, subcategory, line shown) per allowed answer."""


class Offline(Provider):
    """Activation statistics (`offline.py`): no calls, no usage rows."""

    fixed_taxonomy = True

    @property
    def label(self) -> str:
        return "offline"

    def explain(self, step, items):
        cfg = self.section["offline"]
        out = {}
        for fid, ctxs in items:
            got = explain_offline(ctxs, cfg["specific_share"], cfg["broad_share"])
            value = {
                "explanation": got["explanation"],
                "classification": got["classification"],
                "reasoning": got["classification_reasoning"],
            }
            out[fid] = Outcome(fid, value=value)
        return out, []

    def detect(self, step, items):
        return {
            fid: Outcome(fid, value=judge_offline(expl, [c["tokens"][c["center"]]
                                                         for c in win]))
            for fid, expl, win in items
        }, []  # fmt: skip

    def judge(self, step, scorer, items):
        out = {f: Outcome(f, value=scorer.offline(e, p)) for f, e, p in items}
        return out, []

    def propose(self, sample, sae_sample):
        cats = [
            {
                "string_id": cid,
                "name": name,
                "definition": d,
                "examples": [],
                "subcategories": [
                    {"string_id": s, "name": s.replace("_", " "), "definition": sd}
                    for s, sd in subs.items()
                ],
            }
            for cid, (name, d, subs) in TAXONOMY.items()
        ]
        return {
            "categories": cats,
            "summary": "offline: fixed token-class taxonomy",
        }, []

    def assign(self, step, items, choices, kind):
        """The token class holding most of a feature's top-activation weight
        (the explanation is not needed)."""
        out = {}
        for e, ctxs in items:
            (cat, sub), _ = feature_stats(ctxs)["subclasses"][0]
            fid = int(e["feature"])
            out[fid] = Outcome(fid, value=f"{cat}/{sub}" if kind == "sae" else cat)
        return out, []


class LLMProvider(Provider):
    """The shipped (or `autointerp.prompts`) templates, answered by an LLM."""

    def __init__(self, settings, section, cache_path):
        super().__init__(settings, section, cache_path)
        self.check()

    def check(self) -> None:
        """Settings this SDK cannot work with: raise a ValueError."""

    def _templates(self, *names):
        return load_templates(self.section["prompts"], list(names))

    def run(self, step, prompts, parse) -> Results:
        return run_prompts(self, self.cache_path, step, prompts, parse)

    # -- the SDK, one subclass each ---------------------------------------
    @abstractmethod
    def connect(self, api_key: str):
        """The SDK's async client (no retries of its own)."""

    @abstractmethod
    async def send(self, client, messages: list[dict], kwargs: dict) -> CachedReply:
        """One request: `kwargs` holds request_params and temperature."""

    @abstractmethod
    def errors(self) -> tuple[tuple, tuple]:
        """(status errors with .status_code/.message, transient errors)."""

    # -- the steps ----------------------------------------------------------
    def explain(self, step, items):
        t = self._templates("explain")["explain"]
        n_tok = self.section["tokens_listed"]
        prompts = [
            (fid, render(t, examples=format_activation_examples(ctxs, n_tok)))
            for fid, ctxs in items
        ]
        return self.run(step, prompts, parse_explanation)

    def detect(self, step, items):
        t = self._templates("detect")["detect"]
        by_n: dict[int, list] = {}  # the parser checks window numbers against n
        for fid, explanation, win in items:
            listing = "\n".join(
                f"{i + 1}. {format_marked(c['tokens'], c['center'])}"
                for i, c in enumerate(win)
            )
            prompt = render(t, explanation=explanation, contexts=listing, n=len(win))
            by_n.setdefault(len(win), []).append((fid, prompt))
        outcomes, usage = {}, []
        for n, group in by_n.items():
            got, use = self.run(step, group, parse_detect(n))
            outcomes.update(got)
            usage += use
        return outcomes, usage

    def judge(self, step, scorer, items):
        t = self._templates(scorer.template)[scorer.template]
        prompts = [(f, scorer.prompt(t, e, p)) for f, e, p in items]
        return self.run(step, prompts, {f: scorer.parser(p) for f, _, p in items})

    def propose(self, sample, sae_sample):
        cfg = self.section["categories"]
        t = self._templates("categories", "subcategories", "sae_categories")
        usage: list[dict] = []

        def one(step, prompt, parse):
            got, use = self.run(step, [(step, prompt)], parse)
            usage.extend(use)
            if got[step].status != "ok":
                raise RuntimeError(
                    f"{step} proposal failed ({got[step].error}); raw reply: "
                    f"{got[step].raw!r}. Raise autointerp.parse_retries or change "
                    "autointerp.categories.model; answered calls stay cached."
                )
            return got[step].value

        def categories(template, listed, step):
            listing = "\n".join(f"- {e}" for e in listed)
            prompt = render(
                template, feature_list=listing, n_min=cfg["n_min"], n_max=cfg["n_max"]
            )
            return one(step, prompt, parse_categories)

        proposal = categories(t["categories"], sample, "categories")
        cats = proposal["categories"]
        result = {"categories": cats, "summary": proposal.get("summary", "")}
        if cfg["sae_taxonomy"] == "own":
            own = categories(t["sae_categories"], sae_sample, "sae_categories")
            result["sae_categories"] = own["categories"]
            result["sae_summary"] = own.get("summary", "")
        sae_cats = result.get("sae_categories", cats)
        cat_list = "\n".join(
            f"- {c['string_id']}: {c.get('name', '')}: {c.get('definition', '')}"
            for c in sae_cats
        )
        prompt = render(
            t["subcategories"],
            categories=cat_list,
            feature_list="\n".join(f"- {e}" for e in sae_sample),
        )
        subs = one("subcategories", prompt, parse_subcategories)
        for c in sae_cats:
            c["subcategories"] = [
                s
                for s in subs.get(c["string_id"]) or []
                if isinstance(s, dict) and s.get("string_id")
            ]
        if "sae_categories" in result:
            for c in cats:  # LoRA/MLP categories are never split
                c["subcategories"] = []
        return result, usage

    def assign(self, step, items, choices, kind):
        t = self._templates("assign")["assign"]
        n_show = self.section["categories"]["n_examples"]
        ids = [f"{c}/{s}" if s else c for c, s, _ in choices]
        listing = "\n".join(line for _, _, line in choices)
        failed, prompts = {}, []
        for e, ctxs in items:
            fid = int(e["feature"])
            if e["status"] != "ok":
                error = f"explanation {e['status']}"
                failed[fid] = Outcome(fid, status="failed", error=error)
                continue
            ex = "\n".join(
                format_marked(c["tokens"], c["center"]) for c in ctxs[:n_show]
            )
            prompt = render(
                t, explanation=e["explanation"], examples=ex, categories=listing
            )
            prompts.append((fid, prompt))
        outcomes, usage = self.run(
            step, prompts, lambda text: parse_category_id(text, ids)
        )
        return failed | outcomes, usage


class OpenAI(LLMProvider):
    """The openai SDK's chat completions: OpenAI, vllm serve, any compatible
    server at base_url."""

    key_env = "OPENAI_API_KEY"

    def connect(self, api_key):
        s, sdk = self.settings, importlib.import_module("openai")
        return sdk.AsyncOpenAI(
            api_key=api_key, base_url=s.base_url, timeout=s.timeout_s, max_retries=0
        )

    async def send(self, client, messages, kwargs):
        s = self.settings
        if s.max_output_tokens:
            kwargs["max_completion_tokens"] = s.max_output_tokens
        resp = await client.chat.completions.create(
            model=s.model, messages=messages, **kwargs
        )
        usage = resp.usage
        return CachedReply(
            resp.choices[0].message.content or "",
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
        )

    def errors(self):
        sdk = importlib.import_module("openai")
        return (sdk.APIStatusError,), (
            sdk.APIConnectionError, sdk.APIResponseValidationError,
            json.JSONDecodeError,  # a 200 whose body is not JSON
        )  # fmt: skip


class Anthropic(LLMProvider):
    """The anthropic SDK's messages API."""

    key_env = "ANTHROPIC_API_KEY"

    def check(self):
        if not self.settings.max_output_tokens:
            raise ValueError(
                "autointerp.max_output_tokens is required by the anthropic API"
            )

    def connect(self, api_key):
        s, sdk = self.settings, importlib.import_module("anthropic")
        return sdk.AsyncAnthropic(
            api_key=api_key, base_url=s.base_url, timeout=s.timeout_s, max_retries=0
        )

    async def send(self, client, messages, kwargs):
        s = self.settings
        resp = await client.messages.create(
            model=s.model, messages=messages, max_tokens=s.max_output_tokens, **kwargs
        )
        text = "".join(getattr(b, "text", "") for b in resp.content)
        return CachedReply(
            text, int(resp.usage.input_tokens), int(resp.usage.output_tokens)
        )

    def errors(self):
        sdk = importlib.import_module("anthropic")
        return (sdk.APIStatusError,), (
            sdk.APIConnectionError, sdk.APIResponseValidationError,
            json.JSONDecodeError,  # a 200 whose body is not JSON
        )  # fmt: skip


PROVIDERS: dict[str, type[Provider]] = {
    "offline": Offline,
    "openai": OpenAI,
    "anthropic": Anthropic,
}


def provider_for(settings: LLMSettings, section: dict, cache_path) -> Provider:
    """The provider `settings.provider` names, for one step of one run."""
    cls = PROVIDERS.get(settings.provider)
    if cls is None:
        raise ValueError(
            f"autointerp.provider: '{settings.provider}' is not one of "
            + ", ".join(PROVIDERS)
        )
    return cls(settings, section, cache_path)
