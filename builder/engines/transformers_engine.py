"""The transformers engine: a local vision-language model, on CPU or one GPU, no server.

`AutoProcessor` + `AutoModelForImageTextToText` from a local folder. Requests are batched on the
device (left padding), grouped by what they need:

- subset / json_schema answers: `generate()` under xgrammar grammars, one compiled grammar per row
  (a fresh `xgrammar.contrib.hf.LogitsProcessor` per call; compiled grammars are cached by the
  constraint's key). The ordered-subset EBNF makes every answer a valid, duplicate-free label list;
- yes/no checks: one forward pass; the score is the softmax over two groups of next-token logits
  (every single-token spelling of yes / no the tokenizer has) and the text is the likelier word;
- free text: plain `generate()`.

Blocking model calls run in a worker thread behind a lock, so the event loop stays responsive.
torch, transformers and xgrammar are imported in `start()` (the `tagllm[hf]` extra).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import defaultdict
from typing import Any

from builder.engines.base import Engine, Request, Result
from builder.errors import RunError
from builder.prompts.constraints import Constraint, subset_ebnf
from builder.prompts.render import without_images
from builder.prompts.scoring import YesNoIds, yes_no_token_ids, yes_probability


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return [int(i) for i in ids if i is not None]


class TransformersEngine(Engine):
    """A local Hugging Face VLM with grammar-constrained decoding and yes/no scores from logits."""

    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ):
        kwargs.setdefault("concurrency", 64)
        super().__init__(model=model, **kwargs)
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = max(1, int(batch_size))
        self.trust_remote_code = trust_remote_code
        self.processor: Any = None
        self.hf_model: Any = None
        self.tokenizer: Any = None
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._eos: list[int] = []
        self.ids = YesNoIds((), ())
        self.vocab_size = 0
        self.device = "cpu"
        self.batches = 0

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.hf_model is not None:
            return
        if not self.model:
            raise RunError("transformers engine: no model given (use --model DIR or engine.model)")
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
            import xgrammar  # noqa: F401
        except ImportError as exc:
            raise RunError(f"transformers engine needs torch, transformers and xgrammar "
                           f"(pip install -e '.[hf]' in a checkout): {exc}") from exc
        try:
            await asyncio.to_thread(self._load)
        except RunError:
            raise
        except Exception as exc:
            raise RunError(f"transformers engine: cannot load model {self.model!r}: "
                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def _load(self) -> None:
        import torch
        import xgrammar as xgr
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = self.device_name or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.dtype_name:
            dtype = getattr(torch, self.dtype_name)
        else:
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        processor = AutoProcessor.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            self.model, dtype=dtype, trust_remote_code=self.trust_remote_code
        )
        model.to(self.device)
        model.eval()
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(processor, "chat_template", None) is None and getattr(tokenizer, "chat_template", None) is None:
            raise RunError(f"transformers engine: {self.model} has no chat template")
        self.processor, self.hf_model, self.tokenizer = processor, model, tokenizer
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self._eos = _eos_ids(model, tokenizer)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size, stop_token_ids=self._eos)
        self._compiler = xgr.GrammarCompiler(info)
        self.ids = yes_no_token_ids(tokenizer)

    async def close(self) -> None:
        if self.hf_model is None:
            return
        self.hf_model = self.processor = self.tokenizer = self._compiler = None
        self._grammars.clear()
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(device=self.device, batch_size=self.batch_size, dtype=self.dtype_name or "auto")
        if self.hf_model is not None:
            info["architecture"] = type(self.hf_model).__name__
        return info

    # --- batching --------------------------------------------------------------------------
    async def _generate_one(self, request: Request) -> Result:
        return (await self._generate_batch([request]))[0]

    async def _generate_batch(self, requests: list[Request]) -> list[Result]:
        if self.hf_model is None:
            await self.start()
        results: list[Result | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            kind = request.constraint.kind
            mode = "score" if kind == "yesno" else "grammar" if kind in ("subset", "json_schema") else "free"
            groups[(mode, request.image is not None, request.max_tokens, request.temperature)].append(i)
        for (mode, _, _, _), indexes in groups.items():
            for start in range(0, len(indexes), self.batch_size):
                chunk = indexes[start:start + self.batch_size]
                for i, result in zip(chunk, await self._run_chunk(mode, [requests[i] for i in chunk]), strict=True):
                    results[i] = result
        return [r if r is not None else Result(error="internal: no result") for r in results]

    async def _run_chunk(self, mode: str, requests: list[Request]) -> list[Result]:
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self._locked, mode, requests)
        except Exception as exc:
            if len(requests) == 1:
                return [Result(error=f"{type(exc).__name__}: {exc}"[:300], latency=time.perf_counter() - started)]
            # one bad item must not fail its neighbours: retry the chunk one request at a time
            out: list[Result] = []
            for request in requests:
                out.extend(await self._run_chunk(mode, [request]))
            return out
        elapsed = time.perf_counter() - started
        for result in results:
            result.latency = elapsed
        self.calls += len(requests)
        return results

    def _locked(self, mode: str, requests: list[Request]) -> list[Result]:
        with self._lock:
            self.batches += 1
            if mode == "score":
                return self._score(requests)
            return self._generate(requests, constrained=mode == "grammar")

    # --- model calls (worker thread) -------------------------------------------------------
    def _inputs(self, requests: list[Request]) -> Any:
        from PIL import Image

        texts, images = [], []
        for request in requests:
            messages = request.messages if request.image is not None else without_images(request.messages)
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            if request.image is not None:
                with Image.open(io.BytesIO(request.image)) as img:
                    images.append([img.convert("RGB")])
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        # floating tensors (pixel values) also take the model's dtype (bf16 on GPU)
        return self.processor(**kwargs).to(self.hf_model.device, dtype=self.hf_model.dtype)

    def _grammar(self, constraint: Constraint) -> Any:
        key = constraint.key()
        compiled = self._grammars.get(key)
        if compiled is None:
            if constraint.kind == "subset":
                compiled = self._compiler.compile_grammar(subset_ebnf(constraint.options))
            else:
                compiled = self._compiler.compile_json_schema(constraint.schema or '{"type":"object"}',
                                                              any_whitespace=False)
            if len(self._grammars) > 512:
                self._grammars.clear()
            self._grammars[key] = compiled
        return compiled

    def _generate(self, requests: list[Request], constrained: bool) -> list[Result]:
        import torch

        inputs = self._inputs(requests)
        prompt_len = inputs["input_ids"].shape[1]
        first = requests[0]
        kwargs: dict[str, Any] = dict(
            max_new_tokens=first.max_tokens,
            eos_token_id=self._eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if first.temperature and first.temperature > 0:
            kwargs.update(do_sample=True, temperature=first.temperature, top_k=0, top_p=1.0)
            if first.seed is not None:
                torch.manual_seed(first.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        if constrained:
            from xgrammar.contrib.hf import LogitsProcessor

            grammars = [self._grammar(r.constraint) for r in requests]
            kwargs["logits_processor"] = [LogitsProcessor(grammars)]  # a new one per generate() call
        with torch.inference_mode():
            output = self.hf_model.generate(**inputs, **kwargs)
        attention = inputs["attention_mask"]
        results = []
        stop = set(self._eos)
        for row in range(len(requests)):
            new = output[row, prompt_len:].tolist()
            used = len(new)
            for k, token in enumerate(new):
                if token in stop:
                    used = k + 1
                    new = new[:k]
                    break
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Result(
                text=text,
                prompt_tokens=int(attention[row].sum().item()),
                completion_tokens=used,
            ))
        return results

    def _score(self, requests: list[Request]) -> list[Result]:
        import torch

        if not self.ids:
            raise RuntimeError("the tokenizer has no single-token 'yes'/'no'; yes/no scores are impossible")
        inputs = self._inputs(requests)
        with torch.inference_mode():
            logits = self.hf_model(**inputs).logits[:, -1, :].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        wanted = self.ids.all()
        picked = log_probs[:, wanted].tolist()
        attention = inputs["attention_mask"]
        results = []
        for row, request in enumerate(requests):
            score = yes_probability(dict(zip(wanted, picked[row])), self.ids)
            p_yes = score.p_yes if score is not None else 0.5
            result = Result(
                text="yes" if p_yes >= 0.5 else "no",
                prompt_tokens=int(attention[row].sum().item()),
                completion_tokens=1,
            )
            if request.logprobs and score is not None:
                result.yes_prob = p_yes
            results.append(result)
        return results
