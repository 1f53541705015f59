"""`harness look` (also the last stage of `harness demo`): load each model, generate greedily from a few prompts,
cache the residual stream and a layer-0 attention pattern, and write everything to one run:

    activations/<model>.safetensors   prompt{j}/tokens, prompt{j}/blocks.{i}.hook_resid_post [pos, d_model],
                                      prompt{j}/blocks.0.attn.hook_pattern [n_heads, pos, pos]
    generations.jsonl                 one row per (model, prompt): the prompt as fed, the completion
    metrics.json                      per model: residual norm by layer, next-token entropy, speed
    resid_norm.html                   plotly figure: residual-stream norm by layer, one line per model
                                      (one self-contained file: plotly.js is embedded for offline use)

`run_look` takes zoo names / paths (loaded with `harness.load`) or models already loaded
(anything with the HookedTransformer API and a tokenizer), so tests can hand it a tiny model.
Heavy imports (torch, harness.load, plotly) happen inside the functions: the CLI imports
this module just to register the subcommand.
"""

from __future__ import annotations

import re
import time
from typing import Any

from apps.cli.options import add_run_name, add_runs, command_line, positive_int
from harness.errors import HarnessError, ModelNotInstalledError  # light: harness/__init__ imports lazily

DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
PROMPTS = (
    "What is the capital of France?",
    "Explain why the sky is blue in one sentence.",
    "Write a short poem about autumn leaves.",
)
N_CACHE_PROMPTS = 2  # activations are cached for the first two prompts: enough to look at, small on disk


# -- CLI -----------------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("look", help="load the zoo models, generate, cache activations, write a run",
                              description="Load each model, generate greedily from a few prompts, cache "
                              "residual-stream activations and write everything to one run folder.")
    add_runs(p)
    add_run_name(p, help="run name (default: demo-<timestamp>)")
    p.add_argument("--models", metavar="M1,M2", help=f"comma-separated models (default: the installed of {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N", help="tokens to generate per prompt (default: 32)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=main)


def main(args) -> int:

    from rich.console import Console

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    run = run_look(models, runs_dir=args.runs, name=args.name, max_new_tokens=args.max_new_tokens,
                   device=args.device, command=command_line())
    console = Console()
    console.print(f"[bold green]run {run.name} complete[/]: {run.path}")
    for name, m in run.read_json("metrics.json").items():
        console.print(f"  {name}: next-token entropy {m['mean_next_token_entropy']:.3f} nats, "
                      f"{m['generation_tokens_per_s']:.1f} tokens/s")
    return 0


# -- the job ---------------------------------------------------------------------------------

def run_look(models: Any = None, *, runs_dir=None, store=None, name: str | None = None,
             prompts=PROMPTS, n_cache_prompts: int = N_CACHE_PROMPTS, max_new_tokens: int = 32,
             device: str = "cpu", seed: int = 0, chat: bool | None = None, command: str | None = None,
             show_progress: bool = True):
    """Run the demo and return the finished `Run`.

    models: None (the installed default zoo models), a list whose items are names/paths or
    loaded models, or a dict {name: loaded model}. chat: use the tokenizer's chat template
    (None: only for models whose name says instruct/chat/-it and whose tokenizer has one).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.runs import RunStore

    entries = _entries(models)
    if max_new_tokens < 0:
        raise HarnessError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    prompts = list(prompts)
    if not prompts or not 1 <= n_cache_prompts <= len(prompts):
        raise HarnessError(f"the demo needs at least one prompt and 1..{len(prompts)} cached prompts")
    store = store if store is not None else RunStore(runs_dir)
    if name is not None:
        store.check_available(name)
    config = {"models": [n for n, _ in entries], "prompts": prompts, "n_cache_prompts": n_cache_prompts,
              "max_new_tokens": max_new_tokens, "decoding": "greedy", "device": device, "chat": chat}
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), disable=not show_progress, transient=False)

    with progress:
        task = progress.add_task("demo", total=3 * len(entries))
        # The first model loads before the run folder exists, so a misspelt name fails
        # without leaving a failed run behind.
        pending = _load_entry(entries[0], device, progress, task)
        with store.create("demo", name=name, command=command, config=config, seed=seed) as run:
            rows, metrics = [], {}
            for i, entry in enumerate(entries):
                model, load_s = pending if i == 0 else _load_entry(entry, device, progress, task)
                pending = None  # drop our reference so a model we loaded is freed after its turn
                key = entry[0]
                if load_s is not None:
                    run.record_timing(f"load/{key}", load_s)
                model_rows, metrics[key] = _demo_one(run, key, model, prompts, n_cache_prompts, max_new_tokens,
                                                     seed, chat, progress, task)
                rows += model_rows
                del model
            progress.update(task, description="writing results")
            run.write_jsonl("generations.jsonl", rows)
            run.write_json("metrics.json", metrics)
            run.write_text("resid_norm.html", _figure_html(metrics), "html")
            summary = {k: {"mean_next_token_entropy": v["mean_next_token_entropy"]} for k, v in metrics.items()}
            run.finish("complete", metrics=summary)
    return run


def _load_entry(entry, device, progress, task):
    """(model, seconds it took to load, or None for a model given already loaded)."""
    key, model = entry
    if model is None:
        progress.update(task, description=f"loading {key}")
        start = time.perf_counter()
        model = _load(key, device)
        load_s = time.perf_counter() - start
    else:
        load_s = None
    progress.advance(task)
    return model, load_s


def _demo_one(run, key, model, prompts, n_cache_prompts, max_new_tokens, seed, chat, progress, task):
    """Generate with and cache one model; returns its generation rows and its metrics."""
    import torch

    run.add_model(key, _identity(model, key))
    use_chat = _wants_chat(key, model, chat)
    torch.manual_seed(seed)

    progress.update(task, description=f"generating with {key}")
    start = time.perf_counter()
    with torch.inference_mode():
        rows, inputs = zip(*[_generate(model, key, p, max_new_tokens, use_chat) for p in prompts])
    gen_s = time.perf_counter() - start
    run.record_timing(f"generate/{key}", gen_s)
    progress.advance(task)

    progress.update(task, description=f"caching activations of {key}")
    with run.timer(f"cache/{key}"), torch.inference_mode():
        tensors, meta, metrics = _cache(model, inputs[:n_cache_prompts])
    meta = {"model": key, "inputs": [r["input"] for r in rows[:n_cache_prompts]], **meta}
    run.write_tensors(f"activations/{_slug(key)}.safetensors", tensors, metadata=meta)
    n_new = sum(r["n_new_tokens"] for r in rows)
    metrics.update(chat_template=use_chat, generated_tokens=n_new,
                   generation_tokens_per_s=n_new / gen_s if gen_s > 0 else 0.0)
    progress.advance(task)
    return list(rows), metrics


def default_models() -> list[str]:
    """The default zoo models whose packages are installed."""
    from harness import zoo

    installed = {_field(m, "name") for m in zoo.list_models() if _field(m, "installed")}
    names = [n for n in DEFAULT_MODELS if n in installed]
    if not names:
        raise ModelNotInstalledError(f"none of the demo models ({', '.join(DEFAULT_MODELS)}) is installed; "
                                     "install them (`make models`) or pass --models")
    return names


def _entries(models) -> list[tuple[str, Any]]:
    """[(name, loaded model or None)]; names of loaded models come from their identity/config."""
    if models is None:
        models = default_models()
    if isinstance(models, str):
        models = [m for m in models.split(",") if m]
    if isinstance(models, dict):
        entries = list(models.items())
    else:
        entries = [(m, None) if isinstance(m, str) else (_model_name(m, i), m) for i, m in enumerate(models)]
    if not entries:
        raise HarnessError("no models given to the demo; pass --models m1,m2")
    slugs = [_slug(n) for n, _ in entries]  # file names must not collide either
    dupes = sorted(n for n, _ in entries if slugs.count(_slug(n)) > 1)
    if dupes:
        raise HarnessError(f"model {dupes[0]!r} given twice (or two names map to one file name); give each model once")
    return entries


def _load(name: str, device: str):
    import harness

    return harness.load(name, device=device)


def _model_name(model, i: int) -> str:
    identity = getattr(model, "identity", None) or {}
    cfg = getattr(model, "cfg", None)
    return identity.get("name") or getattr(cfg, "model_name", None) or f"model{i}"


def _identity(model, name: str) -> dict:
    """The model's identity and weights hash (harness.identity), with its size and shape."""
    from harness.identity import model_identity

    identity = model_identity(model)
    identity.setdefault("name", name)
    cfg = model.cfg
    identity["n_params"] = sum(p.numel() for p in model.parameters())
    identity["shape"] = {k: getattr(cfg, k, None) for k in ("n_layers", "d_model", "n_heads", "d_vocab")}
    return identity


def _wants_chat(name: str, model, chat: bool | None) -> bool:
    tokenizer = model.tokenizer
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat is None:  # base models' GGUFs can carry a template too, so the name decides
        return has_template and bool(re.search(r"instruct|chat|(^|[-_])it($|[-_])", name.lower()))
    if chat and not has_template:
        raise HarnessError(f"model {name!r} has no chat template; run without chat=True")
    return chat


def _prompt_tokens(model, name: str, prompt: str, chat: bool):
    """The prompt as the model sees it (text, [1, pos] tokens)."""
    import torch

    tokenizer = model.tokenizer
    if tokenizer is None:
        raise HarnessError(f"model {name!r} has no tokenizer; load it with tokenizer=... to run the demo")
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        tokens = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    else:
        text, tokens = prompt, model.to_tokens(prompt, prepend_bos=model.cfg.tokenizer_prepends_bos)
    from harness.devices import device_of

    return text, tokens.to(device_of(model))


def _generate(model, name: str, prompt: str, max_new_tokens: int, chat: bool):
    """(a generations.jsonl row, the prompt's tokens)."""
    text, tokens = _prompt_tokens(model, name, prompt, chat)
    if max_new_tokens > 0:
        out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, return_type="tokens", verbose=False)
    else:
        out = tokens
    new = out[0, tokens.shape[1]:].tolist()
    eos = getattr(model.tokenizer, "eos_token_id", None)
    if eos in new:  # generation may pad with EOS after stopping; keep up to the first one
        new = new[: new.index(eos) + 1]
    completion = model.tokenizer.decode(new, skip_special_tokens=True)
    return {"model": name, "prompt": prompt, "input": text, "chat_template": chat,
            "completion": completion, "n_prompt_tokens": tokens.shape[1], "n_new_tokens": len(new)}, tokens


def _cache(model, inputs):
    """Tensors to save, their metadata, and metrics from caching each [1, pos] token tensor."""
    n_layers = model.cfg.n_layers
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)] + ["blocks.0.attn.hook_pattern"]
    tensors, str_tokens, entropies, top = {}, [], [], []
    norm_sums, norm_count = [0.0] * n_layers, 0
    for j, tokens in enumerate(inputs):
        logits, cache = model.run_with_cache(tokens, names_filter=hooks)
        tensors[f"prompt{j}/tokens"] = tokens[0]
        for hook in hooks:
            tensors[f"prompt{j}/{hook}"] = cache[hook][0].float()
        # Residual norms skip position 0: it acts as an attention sink (BOS or not) whose norm is
        # typically far larger than the rest and would drown the per-layer trend.
        start = 1 if tokens.shape[1] > 1 else 0
        for i in range(n_layers):
            norm_sums[i] += cache[f"blocks.{i}.hook_resid_post"][0, start:].float().norm(dim=-1).sum().item()
        norm_count += tokens.shape[1] - start
        logp = logits[0, -1].float().log_softmax(-1)
        entropies.append(-(logp.exp() * logp).sum().item())
        top.append(model.tokenizer.decode([int(logp.argmax())]))
        str_tokens.append(model.tokenizer.convert_ids_to_tokens(tokens[0].tolist()))
    metrics = {
        "resid_norm_by_layer": [s / max(norm_count, 1) for s in norm_sums],
        "next_token_entropy": entropies,
        "mean_next_token_entropy": sum(entropies) / len(entropies),
        "top_next_token": top,
    }
    return tensors, {"str_tokens": str_tokens, "hooks": hooks}, metrics


def _figure_html(metrics: dict) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, m in metrics.items():
        norms = m["resid_norm_by_layer"]
        fig.add_trace(go.Scatter(x=list(range(len(norms))), y=norms, mode="lines+markers", name=name))
    fig.update_layout(title="Residual-stream norm by layer (mean over positions after BOS)",
                      xaxis_title="layer (blocks.{i}.hook_resid_post)", yaxis_title="mean L2 norm",
                      template="plotly_white")
    # plotly.js is embedded so the file opens offline (these machines reach no CDN).
    return fig.to_html(include_plotlyjs=True, full_html=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _field(entry, key: str):
    return entry.get(key) if isinstance(entry, dict) else getattr(entry, key, None)
