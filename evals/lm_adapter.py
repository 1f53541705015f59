"""`HookedLMEval`: an lm-eval `LM` that runs a `HookedLM`.

Tokenisation follows lm-eval's own HF model (`TemplateLM` splits context and continuation the
same way, BOS handling mirrors `HFLM.tok_encode`), so scores agree with `HFLM` on the same
weights. What differs is how the work is scheduled:

- loglikelihood groups requests by context. Each distinct context runs once (left-padded batch,
  key/value cache), the cache rows are copied once per continuation, and only the
  continuations run on top. Multiple-choice tasks ask for 2-10 continuations of one long
  context, so this saves most of the compute that HFLM spends re-reading the context.
- only the positions that are scored are unembedded (the vocabulary projection dominates for
  small models with large vocabularies).
- generate_until decodes with the cache and stops a batch as soon as every row has hit a stop
  sequence or EOS.

Finished requests can be kept in a `RequestCache` (evals.request_cache: JSON Lines, never
pickle), so an eval cut short resumes without recomputing them; lm-eval's own `use_cache` (a
sqlitedict that unpickles) is not used.

The class is registered with lm-eval's model registry as "harness", so once `evals.lm_adapter`
is imported `simple_evaluate(model="harness", model_args="pretrained=NAME,dtype=float32")` works;
`harness-lm-eval` (evals.lm_eval_cli) is lm-eval's own CLI with that registration done.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import CacheHook as _LmEvalCacheHook
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import (
    Collator,
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm.auto import tqdm

from evals.request_cache import RequestCache
from harness.errors import HarnessError
from harness.models.generate import sample_next
from harness.models.transformer import HookedLM, KVCache

Request = tuple[Any, list[int], list[int]]  # ((context, continuation) or None, ctx ids, cont ids)


DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "auto": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
          "fp16": torch.float16}
# lm-eval passes these to every model; they mean nothing here (or are handled by lm-eval itself).
IGNORED_ARGS = ("max_batch_size", "trust_remote_code", "parallelize", "revision", "backend", "use_fast_tokenizer")


class HookedLMEval(TemplateLM):
    """lm-eval model around a HookedLM (which must carry its tokenizer).

    batch_size: contexts per forward pass (their continuations ride along);
    max_batch_tokens: cap on batch x padded context length, to bound memory on long prompts;
    request_cache: a RequestCache that keeps finished requests (for resuming).

    From lm-eval's CLI or model_args strings: `pretrained=<zoo name | model folder | .gguf | HF id>`,
    plus dtype, device, batch_size, max_length, max_gen_toks, add_bos_token, max_batch_tokens
    (see `create_from_arg_string`).
    """

    def __init__(
        self,
        model: HookedLM,
        batch_size: int = 16,
        max_batch_tokens: int = 8192,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        chat_template_args: dict | None = None,
        request_cache: RequestCache | None = None,
    ):
        super().__init__()
        if not hasattr(model, "cfg"):
            raise HarnessError(f"HookedLMEval needs a loaded HookedLM, got {type(model).__name__}; "
                               "use HookedLMEval.create_from_arg_string('pretrained=NAME') to load one by name")
        if model.tokenizer is None:
            raise HarnessError("the model has no tokenizer; load it with tokenizer= to evaluate it")
        self.model = model.eval()
        self.tokenizer = model.tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = max_batch_tokens
        self._max_length = max_length
        self._max_gen_toks = max_gen_toks
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.chat_template_args = chat_template_args or {}
        self._device = model.device
        self.request_cache = None
        if request_cache is not None:
            self.set_request_cache(request_cache)

    # ------------------------------------------------------------------ lm-eval construction
    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "HookedLMEval":
        """`pretrained=NAME,dtype=float32,batch_size=8,device=cpu` (lm-eval's --model_args)."""
        return cls.create_from_arg_obj(lm_utils.simple_parse_args_string(arg_string or ""), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "HookedLMEval":
        # model_args win over lm-eval's CLI-wide settings (its --batch_size defaults to 1).
        args = {k: v for k, v in (additional_config or {}).items() if v is not None}
        explicit = {k: v for k, v in (arg_dict or {}).items() if v is not None}
        if "device" not in explicit and str(args.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            args["device"] = "cpu"  # lm-eval's CLI asks for cuda by default; HFLM falls back the same way
        args.update(explicit)
        return cls.from_pretrained(**args)

    @classmethod
    def from_pretrained(cls, pretrained: str | None = None, dtype: str | torch.dtype = "float32",
                        device: str | None = None, batch_size: int | str = 16, **kwargs) -> "HookedLMEval":
        """Load `pretrained` (anything harness.load takes by name) and wrap it."""
        import harness

        if not pretrained:
            raise HarnessError("model_args needs pretrained=<zoo name | model folder | .gguf file | HF id>")
        if isinstance(dtype, str):
            if dtype.lower() not in DTYPES:
                raise HarnessError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(DTYPES))}")
            dtype = DTYPES[dtype.lower()]
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise HarnessError(f"device={device} but torch here has no CUDA; use device=cpu")
        for key in IGNORED_ARGS:
            kwargs.pop(key, None)
        known = {"max_batch_tokens", "max_length", "max_gen_toks", "add_bos_token", "prefix_token_id"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise HarnessError(f"unknown model_args for the harness model: {', '.join(unknown)}; it takes pretrained, "
                               f"dtype, device, batch_size, {', '.join(sorted(known))}")
        model = harness.load(str(pretrained), device=device, dtype=dtype)
        return cls(model, batch_size=_batch_size(batch_size), **kwargs)

    # ------------------------------------------------------------------ request cache
    def set_request_cache(self, cache: RequestCache | None) -> None:
        """Keep finished requests in `cache` (None: keep nothing)."""
        self.request_cache = cache
        self.set_cache_hook(cache.hook() if cache is not None else lm_utils_cache_hook())

    def _through_cache(self, method: str, requests, compute):
        if self.request_cache is None:
            return compute(requests)
        return self.request_cache.run(method, requests, compute)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._through_cache("loglikelihood", requests,
                                   lambda reqs: super(HookedLMEval, self).loglikelihood(reqs, disable_tqdm=disable_tqdm))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return self._through_cache("loglikelihood_rolling", requests,
                                   lambda reqs: self._loglikelihood_rolling(reqs, disable_tqdm=disable_tqdm))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return self._through_cache("generate_until", requests,
                                   lambda reqs: self._generate_until(reqs, disable_tqdm=disable_tqdm))

    # ------------------------------------------------------------------ properties lm-eval reads
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # As HFLM: the token an empty context is replaced by.
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or self.model.cfg.n_ctx

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, 0):
            if candidate is not None:
                return candidate
        return 0

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or "hooked").replace("/", "__")

    # ------------------------------------------------------------------ tokenisation (as HFLM)
    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None, **kw):
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        # A string that already starts with BOS (chat templates write it) must not get a second one.
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                      continue_final_message=not add_generation_prompt, **self.chat_template_args)
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError:
            # Some templates refuse a system turn; HFLM drops it and retries, so do we.
            history = [m for m in chat_history if m["role"] != "system"]
            return self.tokenizer.apply_chat_template(history, **kwargs)

    # ------------------------------------------------------------------ model calls
    def _residual(self, tokens, attention_mask, cache) -> torch.Tensor:
        # The final residual stream; unembedding happens only where a position is scored.
        return self.model(tokens, attention_mask=attention_mask, past_kv_cache=cache,
                          stop_at_layer=self.model.cfg.n_layers)

    def _score(self, resid: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(target) and whether it is the argmax, per position; never materialises a
        second vocabulary-sized tensor (log_softmax would)."""
        logits = self.model.unembed_residual(resid).float()
        logprob = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)
        return logprob, logits.argmax(-1) == targets

    # ------------------------------------------------------------------ loglikelihood
    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False, **kw):
        # Left-truncate exactly as HFLM does: keep the last max_length + 1 tokens of ctx + cont.
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        prepared = []
        for i, (_, ctx, cont) in enumerate(requests):
            if not cont:
                raise HarnessError("lm-eval sent an empty continuation to score")
            keep = (list(ctx) + list(cont))[-(self.max_length + 1):]
            ctx_kept = tuple(keep[: len(keep) - len(cont)])
            if not ctx_kept:
                raise HarnessError(f"a continuation of {len(cont)} tokens does not fit the model's "
                                   f"{self.max_length}-token context")
            prepared.append((ctx_kept, list(cont)))
            groups[ctx_kept].append(i)

        # A unit is one context with some of its continuations; a context with very many (rolling
        # perplexity windows all start from the same prefix token) is split to bound memory.
        units = [(ctx, part) for ctx, rows in groups.items() for part in self._split_rows(rows, prepared)]
        # Longest first: memory problems show at once and the first unit sizes the batch.
        units.sort(key=lambda u: -(len(u[0]) + max(len(prepared[i][1]) for i in u[1])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood")
        with torch.inference_mode():
            for batch in self._batches(units, prepared):
                contexts = list(dict.fromkeys(ctx for ctx, _ in batch))
                rows = [(ctx, i) for ctx, part in batch for i in part]
                for (_, i), answer in zip(rows, self._score_batch(contexts, [(c, prepared[i][1]) for c, i in rows])):
                    results[i] = answer
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
                pbar.update(len(rows))
        pbar.close()
        return results

    def _split_rows(self, rows: list[int], prepared) -> list[list[int]]:
        parts, part, tokens = [], [], 0
        for i in rows:
            n = len(prepared[i][1])
            if part and (tokens + n > self.max_batch_tokens // 4 or len(part) >= 4 * self.batch_size):
                parts.append(part)
                part, tokens = [], 0
            part.append(i)
            tokens += n
        return parts + [part]

    def _batches(self, units, prepared):
        """Group units so contexts x width stays under max_batch_tokens and the scored
        continuation positions under a quarter of it (each costs a vocabulary row)."""
        batch, width, scored = [], 0, 0
        for ctx, part in units:
            cont = sum(len(prepared[i][1]) for i in part)
            new_width = max(width, len(ctx))
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * new_width > self.max_batch_tokens
                          or scored + cont > self.max_batch_tokens // 4):
                yield batch
                batch, new_width, scored = [], len(ctx), 0
            batch.append((ctx, part))
            width, scored = new_width, scored + cont
        if batch:
            yield batch

    def _score_batch(self, contexts, rows) -> list[tuple[float, bool]]:
        """contexts: distinct context id tuples; rows: (context, continuation ids) per request."""
        device = self.device
        width = max(len(c) for c in contexts)
        cont_width = max(len(cont) for _, cont in rows) - 1  # the last token is never an input
        ctx_tokens, ctx_mask = _pad(contexts, width, self.pad_token_id, left=True, device=device)
        cache = KVCache(self.model.cfg.n_layers, capacity=width + max(cont_width, 0))
        resid = self._residual(ctx_tokens, ctx_mask if not bool(ctx_mask.all()) else None, cache)

        index = {c: j for j, c in enumerate(contexts)}
        row_ctx = torch.tensor([index[c] for c, _ in rows], device=device)
        conts = [cont for _, cont in rows]
        # The last context position predicts each continuation's first token.
        first_lp, first_ok = self._score(resid[:, -1].index_select(0, row_ctx),
                                         torch.tensor([c[0] for c in conts], device=device))
        rest_lp = rest_ok = None
        if cont_width > 0:
            # One cache row per continuation, then all continuations in one pass.
            cache.select_rows(row_ctx)
            cache.attention_mask = ctx_mask.index_select(0, row_ctx)
            inputs, in_mask = _pad([c[:-1] for c in conts], cont_width, self.pad_token_id, left=False, device=device)
            targets, _ = _pad([c[1:] for c in conts], cont_width, 0, left=False, device=device)
            rest_lp, rest_ok = self._score(self._residual(inputs, in_mask, cache), targets)

        answers = []
        for r, cont in enumerate(conts):
            n = len(cont) - 1
            logprob, greedy = first_lp[r], first_ok[r]
            if n > 0:
                logprob = logprob + rest_lp[r, :n].sum()
                greedy = greedy & rest_ok[r, :n].all()
            answers.append((float(logprob), bool(greedy)))
        return answers

    def _loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for r, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(r)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for r, (logprob, _) in zip(owner, scores):
            totals[r] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------------ generation
    def _generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        collator = Collator([req.args for req in requests], sort_fn=lambda a: (-len(self.tok_encode(a[0])), a[0]),
                            group_by="gen_kwargs", group_fn=lambda a: a[1])
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        out = []
        pbar = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, all_kwargs = zip(*chunk)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_new = int(kwargs.pop("max_gen_toks"))
            texts = self._generate(list(contexts), until, max_new, kwargs)
            for context, text in zip(contexts, texts):
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), text)
            pbar.update(len(contexts))
        pbar.close()
        return collator.get_original(out)

    @torch.inference_mode()
    def _generate(self, contexts: list[str], until: list[str], max_new: int, kwargs: dict) -> list[str]:
        room = self.max_length - max_new
        if room <= 0:
            raise HarnessError(f"max_gen_toks={max_new} leaves no room for a prompt in a {self.max_length}-token context")
        ids = [self.tok_encode(c, left_truncate_len=room) for c in contexts]
        tokens, mask = _pad(ids, max(map(len, ids)), self.pad_token_id, left=True, device=self.device)
        do_sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 0.0) or 0.0) > 0
        temperature = float(kwargs.get("temperature", 1.0) or 1.0)
        eos = self.eot_token_id
        cache = KVCache(self.model.cfg.n_layers, capacity=tokens.shape[1] + max_new)
        generated: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        step, step_mask = tokens, (mask if not bool(mask.all()) else None)
        for _ in range(max_new):
            logits = self.model.unembed_residual(self._residual(step, step_mask, cache)[:, -1])
            nxt = sample_next(logits, do_sample, temperature, kwargs.get("top_k"), kwargs.get("top_p"))
            for r, t in enumerate(nxt.tolist()):
                if done[r]:
                    continue
                if t == eos:
                    done[r] = True
                    continue
                generated[r].append(t)
                tail = self.tok_decode(generated[r][-16:])  # a stop string spans a few tokens at most
                done[r] = any(s in tail for s in until if s)
            if all(done):
                break
            step, step_mask = nxt[:, None], None
        return [postprocess_generated_text(self.tok_decode(g), stop=until, think_end_token=None) for g in generated]


def register(name: str = "harness") -> None:
    """Put HookedLMEval in lm-eval's model registry under `name` (done on import)."""
    import lm_eval.models  # noqa: F401  lm-eval fills its registry only while it is empty: fill it first
    from lm_eval.api.registry import model_registry

    try:
        model_registry.register(name)(HookedLMEval)
    except ValueError:  # already registered (by a reloaded copy of this module): keep that one
        pass


def lm_utils_cache_hook():
    """lm-eval's do-nothing cache hook (what an LM has before any cache is set)."""
    return _LmEvalCacheHook(None)


def _batch_size(value) -> int:
    # lm-eval's CLI may pass "auto" or "auto:N"; this adapter sizes batches by max_batch_tokens.
    if isinstance(value, str):
        if value.startswith("auto"):
            return 16
        try:
            return int(value)
        except ValueError:
            raise HarnessError(f"batch_size must be a whole number or 'auto', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(f"batch_size must be a whole number of at least 1, got {value!r}")
    return value


def _pad(seqs, width: int, pad_id: int, left: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        n = len(seq)
        if n:
            span = slice(width - n, width) if left else slice(0, n)
            tokens[r, span] = torch.tensor(list(seq), dtype=torch.long)
            mask[r, span] = 1
    return tokens.to(device), mask.to(device)


register()
