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
- One live engine per process: SGLang's `shutdown()` kills the whole process tree and two engines
  would claim the same GPU memory, so a second `start()` with another model is refused (use an
  `http` engine for a second model, e.g. calibration's LLM).
- With `dp_size > 1`, each request names its data-parallel replica by a hash of its image
  (`routed_dp_rank`), so all requests of one image meet the same radix cache.
- The multimodal preprocessing cache is on by default (`mm_preprocess_cache_size_mb`): the ~13
  requests of one image decode and preprocess it once, not 13 times.
- Aborts SGLang raises as HTTP-style exceptions with a status (429, 5xx) are transient: retried.

Tests inject a stand-in through `engine_factory` (and `processor_factory`), with the same method
signatures as `sglang.Engine`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import zlib
from collections.abc import Callable
from typing import Any

from builder.engines.base import Engine, EngineDied, EngineError, Request, Result
from builder.engines.sglang_params import sglang_fields
from builder.errors import RunError
from builder.prompts.render import without_images
from builder.prompts.scoring import WORD_IDS, YesNoIds, by_word, yes_no_token_ids, yes_probability

DEFAULT_MM_CACHE_MB = 512  # multimodal preprocessing cache (SGLang's default for Qwen2.5-VL is 0: off)
LPM_MAX_WAITING = 128  # SGLang's lpm policy turns into fcfs above this many waiting requests
_LIVE: dict[str, Any] = {}  # the one started engine of this process: {"engine": SglangEngine}


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
        model: str | None = None,
        tp_size: int = 1,
        dp_size: int = 1,
        mem_fraction_static: float | None = None,
        context_length: int | None = None,
        schedule_policy: str = "lpm",
        grammar_backend: str = "xgrammar",
        max_pixels: int | None = None,
        trust_remote_code: bool = False,
        log_level: str = "warning",
        enable_metrics: bool = False,
        mm_preprocess_cache_size_mb: int | None = DEFAULT_MM_CACHE_MB,
        engine_factory: Callable[..., Any] | None = None,
        processor_factory: Callable[..., Any] | None = None,
        **kwargs: Any,
    ):
        base_keys = ("concurrency", "timeout", "retries", "backoff", "max_restarts")
        base = {k: kwargs.pop(k) for k in base_keys if k in kwargs}
        super().__init__(model=model, **base)
        if schedule_policy == "lpm" and self.concurrency > LPM_MAX_WAITING:
            print(f"sglang engine: concurrency {self.concurrency} lowered to {LPM_MAX_WAITING}: above that many "
                  f"waiting requests SGLang's lpm policy falls back to fcfs", file=sys.stderr)
            self.concurrency = LPM_MAX_WAITING
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
        if mm_preprocess_cache_size_mb is not None:
            self.server_args["mm_preprocess_cache_size_mb"] = int(mm_preprocess_cache_size_mb)
        if max_pixels:
            self.server_args["mm_process_config"] = {"image": {"max_pixels": int(max_pixels)}}
        self.server_args.update(kwargs)  # any other sglang ServerArgs field, passed through
        self.engine_factory = engine_factory or default_engine_factory
        self.processor_factory = processor_factory or default_processor_factory
        self.trust_remote_code = trust_remote_code
        self.sgl: Any = None
        self.processor: Any = None
        self.ids = YesNoIds((), ())
        self._atexit: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.sgl is not None:
            return
        if not self.model:
            raise RunError("sglang engine: no model given (use --model or engine.model)")
        other = _LIVE.get("engine")
        if other is not None and other is not self:
            raise RunError(f"sglang engine: {other.model!r} is already running in this process and SGLang "
                           f"allows one engine per process; reach {self.model!r} through an http engine "
                           f"(a separate `sglang serve`), or use the same model")
        try:
            self.processor = self.processor_factory(self.model, trust_remote_code=self.trust_remote_code)
        except ImportError as exc:
            raise RunError(f"sglang engine needs transformers to render prompts: {exc}") from exc
        except Exception as exc:
            raise RunError(f"sglang engine: cannot load the processor of {self.model!r}: {exc}") from exc
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.ids = yes_no_token_ids(tokenizer)
        if self.server_args.get("device") == "cpu":  # SGLang's CPU backend is chosen by this variable, read at import
            os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")
        print(f"sglang engine: loading {self.model} (tp={self.server_args['tp_size']}, "
              f"dp={self.server_args['dp_size']}); this takes minutes", file=sys.stderr, flush=True)
        try:
            # in the calling (main) thread: sglang installs signal handlers and spawns processes
            self.sgl = self.engine_factory(model_path=self.model, **self.server_args)
        except ImportError as exc:
            raise RunError(f"sglang engine is not installed (pip install -e '.[sglang]' in a checkout): {exc}") from exc
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise RunError(f"sglang engine: cannot start {self.model!r}: {type(exc).__name__}: {first}") from exc
        _LIVE["engine"] = self
        self._atexit = self._shutdown_now
        atexit.register(self._atexit)

    def _shutdown_now(self) -> None:
        engine, self.sgl = self.sgl, None
        if _LIVE.get("engine") is self:
            del _LIVE["engine"]
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
        info["gpus"] = int(self.server_args.get("tp_size") or 1) * int(self.server_args.get("dp_size") or 1)
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
        params, fields = sglang_fields(request, self.ids, top_logprobs=20)
        args: dict[str, Any] = {"prompt": self.render(request), "sampling_params": params, **fields}
        if request.image is not None:
            args["image_data"] = request.image
        dp_size = int(self.server_args.get("dp_size") or 1)
        if dp_size > 1:  # one image, one replica: its radix cache holds the image for every question
            args["routed_dp_rank"] = zlib.crc32(request.image or b"") % dp_size
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
        except Exception as exc:
            status = getattr(exc, "status_code", None)  # fastapi.HTTPException from an aborted request
            if isinstance(status, int):
                detail = getattr(exc, "detail", "") or exc
                raise EngineError(f"sglang aborted the request (HTTP {status}): {detail}",
                                  transient=status == 429 or status >= 500) from exc
            raise
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
            score = self._score(meta, "token_ids_logprob" in args)
            result.yes_prob = score.p_yes if score is not None else None
        return result

    def _score(self, meta: dict[str, Any], by_ids: bool) -> Any:
        """P(yes) from the asked ids' logprobs, or (ids unknown) from the top tokens by word."""
        key = "output_token_ids_logprobs" if by_ids else "output_top_logprobs"
        first = (meta.get(key) or [[]])[0] or []
        entries = [e for e in first if isinstance(e, (list, tuple)) and len(e) >= 2 and e[0] is not None]
        if by_ids:
            return yes_probability({int(e[1]): float(e[0]) for e in entries}, self.ids)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        floor = min((float(e[0]) for e in entries), default=None)
        return yes_probability(by_word((tokenizer.decode([int(e[1])]), e[0]) for e in entries), WORD_IDS, floor)


def _image_key(image: bytes | None) -> str:
    return hashlib.sha1(image).hexdigest() if image else ""
