"""The sglang engine: an in-process `sglang.Engine` on the GPU(s) of this machine (`tagllm[sglang]`).

- The engine is built in `start()`, never at import. SGLang spawns its scheduler and detokenizer
  with the *spawn* start method, so the program that starts it must be a proper entry point
  (`tagllm` console script, or code under `if __name__ == "__main__":`). `start()` runs in the main
  thread inside the event loop, which is what SGLang's signal handlers need.
- Prompts are rendered with the model's own processor chat template (`AutoProcessor`), so the image
  placeholder is the model's own; `generate` takes rendered text and applies no template itself.
- Stage 1 uses the ordered-subset grammar as `sampling_params["ebnf"]`; JSON-schema constraints go
  as a JSON string in `sampling_params["json_schema"]`; yes/no is one token with
  `token_ids_logprob=[yes ids + no ids]`, read from `meta_info["output_token_ids_logprobs"]`.
- Every request is its own `async_generate` call: a bad item (bad image, context overflow) raises
  only for itself (SGLang fails a whole batch call on one 4xx). Requests about one image are
  submitted next to each other so the radix cache reuses the image prefix (`schedule_policy="lpm"`).
- `close()` calls `shutdown()`; an atexit hook does the same if the program ends another way (Ctrl-C).

Tests inject a stand-in through `engine_factory` (and `processor_factory`), with the same method
signatures as `sglang.Engine`.
"""

from __future__ import annotations

import atexit
import hashlib
import math
from collections.abc import Callable
from typing import Any

from builder.engines.base import Engine, EngineDied, EngineError, Request, Result
from builder.engines.sglang_params import sglang_fields
from builder.engines.transformers_engine import yes_no_token_ids
from builder.errors import RunError
from builder.prompts.render import without_images


def default_engine_factory(**kwargs: Any) -> Any:
    """`sglang.Engine(**kwargs)`: imported here only, so sglang (and torch) load when chosen."""
    import sglang

    return sglang.Engine(**kwargs)


def default_processor_factory(model: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)


class SglangEngine(Engine):
    """SGLang's offline engine, driven with per-request `async_generate` calls."""

    name = "sglang"

    def __init__(
        self,
        vocab: Any = None,
        model: str | None = None,
        tp_size: int = 1,
        dp_size: int = 1,
        mem_fraction_static: float | None = None,
        context_length: int | None = None,
        schedule_policy: str = "lpm",
        grammar_backend: str = "xgrammar",
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
        log_level: str = "error",
        enable_metrics: bool = False,
        engine_factory: Callable[..., Any] | None = None,
        processor_factory: Callable[..., Any] | None = None,
        **kwargs: Any,
    ):
        base_keys = ("concurrency", "timeout", "retries", "backoff", "max_restarts")
        base = {k: kwargs.pop(k) for k in base_keys if k in kwargs}
        super().__init__(model=model, **base)
        self.vocab = vocab
        self.server_args: dict[str, Any] = dict(
            tp_size=int(tp_size),
            dp_size=int(dp_size),
            grammar_backend=grammar_backend,
            schedule_policy=schedule_policy,
            trust_remote_code=trust_remote_code,
            log_level=log_level,
            enable_metrics=enable_metrics,
        )
        if mem_fraction_static is not None:
            self.server_args["mem_fraction_static"] = float(mem_fraction_static)
        if context_length is not None:
            self.server_args["context_length"] = int(context_length)
        if max_pixels:
            self.server_args["mm_process_config"] = {"image": {"max_pixels": int(max_pixels)}}
        self.server_args.update(kwargs)  # any other sglang ServerArgs field, passed through
        self.engine_factory = engine_factory or default_engine_factory
        self.processor_factory = processor_factory or default_processor_factory
        self.trust_remote_code = trust_remote_code
        self.sgl: Any = None
        self.processor: Any = None
        self.yes_ids: list[int] = []
        self.no_ids: list[int] = []
        self._atexit: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.sgl is not None:
            return
        if not self.model:
            raise RunError("sglang engine: no model given (use --model or engine.model)")
        try:
            self.processor = self.processor_factory(self.model, trust_remote_code=self.trust_remote_code)
        except ImportError as exc:
            raise RunError(f"sglang engine needs transformers to render prompts: {exc}") from exc
        except Exception as exc:
            raise RunError(f"sglang engine: cannot load the processor of {self.model!r}: {exc}") from exc
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.yes_ids, self.no_ids = yes_no_token_ids(tokenizer)
        try:
            # in the calling (main) thread: sglang installs signal handlers and spawns processes
            self.sgl = self.engine_factory(model_path=self.model, **self.server_args)
        except ImportError as exc:
            raise RunError(f"sglang engine is not installed (pip install 'tagllm[sglang]'): {exc}") from exc
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise RunError(f"sglang engine: cannot start {self.model!r}: {type(exc).__name__}: {first}") from exc
        self._atexit = self._shutdown_now
        atexit.register(self._atexit)

    def _shutdown_now(self) -> None:
        engine, self.sgl = self.sgl, None
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # pragma: no cover - best effort at exit
                pass

    async def close(self) -> None:
        self._shutdown_now()
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["server_args"] = {k: v for k, v in self.server_args.items() if "key" not in k and "token" not in k}
        return info

    # --- requests --------------------------------------------------------------------------
    async def generate(self, requests: list[Request],
                       on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
        """Submit requests grouped by image (first-seen order), so one image's requests run together
        and its prefix (system prompt + image tokens) is computed once; answers stream back by
        their original index."""
        first_seen: dict[str, int] = {}
        for i, request in enumerate(requests):
            first_seen.setdefault(_image_key(request.image), i)
        order = sorted(range(len(requests)), key=lambda i: first_seen[_image_key(requests[i].image)])
        callback = None
        if on_result is not None:
            def callback(j: int, result: Result) -> None:
                on_result(order[j], result)
        results = await super().generate([requests[i] for i in order], callback)
        out: list[Result] = [Result()] * len(requests)
        for j, result in enumerate(results):
            out[order[j]] = result
        return out

    def render(self, request: Request) -> str:
        messages = request.messages if request.image is not None else without_images(request.messages)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def call_args(self, request: Request) -> dict[str, Any]:
        """The keyword arguments of one `async_generate` call."""
        params, fields = sglang_fields(request, self.yes_ids, self.no_ids, top_logprobs=20)
        args: dict[str, Any] = {"prompt": self.render(request), "sampling_params": params, **fields}
        if request.image is not None:
            args["image_data"] = request.image
        return args

    async def _generate_one(self, request: Request) -> Result:
        if self.sgl is None:
            raise EngineError("sglang engine is not started")
        args = self.call_args(request)
        try:
            out = await self.sgl.async_generate(**args)
        except ValueError as exc:  # SGLang's 4xx abort: bad schema, bad image, prompt too long
            raise EngineError(f"rejected by sglang: {exc}", transient=False) from exc
        except (ConnectionError, EOFError) as exc:  # its scheduler/detokenizer processes are gone
            raise EngineDied(f"sglang engine lost its worker processes: {exc}") from exc
        if isinstance(out, list):  # a batch answer for a single prompt: take the one item
            out = out[0] if out else {}
        if not isinstance(out, dict):
            raise EngineError(f"unexpected sglang output: {str(out)[:80]!r}")
        meta = out.get("meta_info") or {}
        result = Result(
            text=str(out.get("text") or ""),
            prompt_tokens=int(meta.get("prompt_tokens") or 0),
            completion_tokens=int(meta.get("completion_tokens") or 0),
            cached_tokens=int(meta.get("cached_tokens") or 0),
        )
        if meta.get("e2e_latency"):
            result.latency = float(meta["e2e_latency"])
        if request.constraint.kind == "yesno" and request.logprobs:
            result.yes_prob = self._yes_prob(meta, "token_ids_logprob" in args)
        return result

    def _yes_prob(self, meta: dict[str, Any], by_ids: bool) -> float | None:
        key = "output_token_ids_logprobs" if by_ids else "output_top_logprobs"
        positions = meta.get(key) or []
        first = positions[0] if positions else []
        logprob = {}
        for entry in first or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 2 and entry[0] is not None:
                logprob[int(entry[1])] = float(entry[0])
        yes_ids, no_ids = self.yes_ids, self.no_ids
        if not by_ids:  # match the returned ids' text against yes/no spellings
            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            words = {t: tokenizer.decode([t]).strip().lower() for t in logprob}
            yes_ids = [t for t, w in words.items() if w == "yes"]
            no_ids = [t for t, w in words.items() if w == "no"]
        p_yes = sum(math.exp(logprob[t]) for t in yes_ids if t in logprob)
        p_no = sum(math.exp(logprob[t]) for t in no_ids if t in logprob)
        if p_yes + p_no <= 0:
            return None
        return p_yes / (p_yes + p_no)




def _image_key(image: bytes | None) -> str:
    return hashlib.sha1(image).hexdigest() if image else ""
