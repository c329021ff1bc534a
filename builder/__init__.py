"""tagllm: build multi-label image datasets labeled by multimodal LLMs (the TagLLM method)."""

__version__ = "0.1.0"
