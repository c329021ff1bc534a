"""Build a tiny, randomly initialised vision-language model that loads like a real one.

No weights can be downloaded on test machines, yet the transformers engine must run real model
code: processor, chat template, image placeholder expansion, vision tower, generate(). This
module makes such a model from scratch in well under a second and under a megabyte:

- a byte-level BPE tokenizer trained with `tokenizers` on the words our prompts use, the COCO
  label names, JSON punctuation and "yes"/"no", plus the architecture's special tokens;
- the architecture's image processor built from defaults, shrunk to a few image tokens;
- a model from a tiny config (hidden 64, 2 layers, head_dim 32);

all written with `save_pretrained`, so `AutoProcessor` / `AutoModelForImageTextToText` reload it.
Its answers are noise: use it to test structure (constrained, parsed, scored), never content.

Heavy imports (torch, transformers, tokenizers) happen inside `make_tiny_vlm`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHS = ("llava", "idefics3", "qwen2_5_vl")

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

COCO_GROUPS = (
    "person", "vehicle", "outdoor", "animal", "accessory", "sports", "kitchen", "food", "furniture",
    "electronic", "appliance", "indoor",
)

_PROMPT_WORDS = """
You are a careful image annotator. Answer only about what is visible in the image.
Which of the following objects are visible in this image? Options: Answer with JSON
{"labels": [...]} listing only the options that are clearly visible, in the order given above.
Use an empty list if none are visible. Is there a in this image? Answer yes or no.
Definition of Counts as Does not count Do not confuse it with system user assistant
yes no Yes No YES NO
"""

_JSON_BITS = '{"labels":[]} {"labels":["a","b"]} [ ] { } " , : ' + "\n"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_COMMON_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_ARCH_SPECIAL = {
    "llava": ["<image>"],
    "idefics3": ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
    "qwen2_5_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
}
IMAGE_PLACEHOLDER = {
    "llava": "<image>",
    "idefics3": "<image>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}

HIDDEN = 64
HEADS = 2  # head_dim 32: smaller head dims break some rotary / attention kernels
LAYERS = 2
INTERMEDIATE = 128


def _corpus() -> list[str]:
    lines = [_PROMPT_WORDS, _JSON_BITS, " ".join(COCO_LABELS), " ".join(COCO_GROUPS)]
    lines += [json.dumps({"labels": list(COCO_LABELS[i:i + 4])}, separators=(",", ":")) for i in range(0, 80, 4)]
    try:  # the prompt templates shipped with the package, when present
        from importlib import resources

        folder = resources.files("builder.prompts").joinpath("templates")
        for entry in folder.iterdir():
            if entry.name.endswith(".j2"):
                lines.append(entry.read_text(encoding="utf-8"))
    except Exception:  # pragma: no cover - templates are optional for the tokenizer
        pass
    return lines * 3


def _train_tokenizer(specials: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _fast_tokenizer(arch: str, vocab_size: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    specials = _COMMON_SPECIAL + _ARCH_SPECIAL[arch]
    tok = _train_tokenizer(specials, vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_ARCH_SPECIAL[arch],
    )
    fast.padding_side = "left"
    return fast


def _text_config(kind: str, vocab: int, tokenizer: Any, **extra: Any) -> dict[str, Any]:
    cfg = dict(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    cfg.update(extra)
    return cfg


def _build_llava(tokenizer: Any, seed: int) -> tuple[Any, Any]:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    image_size, patch = 32, 8
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
            num_hidden_layers=2, num_attention_heads=HEADS, image_size=image_size, patch_size=patch,
            projection_dim=HIDDEN,
        ),
        text_config=_text_config("llama", len(tokenizer), tokenizer, model_type="llama", head_dim=HIDDEN // HEADS),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", IMAGE_PLACEHOLDER["llava"]),
    )
    return model, processor


def _build_idefics3(tokenizer: Any, seed: int) -> tuple[Any, Any]:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    image_size, patch, scale = 32, 8, 2
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=2,
            num_attention_heads=HEADS, image_size=image_size, patch_size=patch,
        ),
        text_config=_text_config("llama", len(tokenizer), tokenizer, model_type="llama", head_dim=HIDDEN // HEADS),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    seq_len = (image_size // patch) ** 2 // (scale * scale)
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len,
        chat_template=CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", IMAGE_PLACEHOLDER["idefics3"]),
    )
    return model, processor


def _build_qwen2_5_vl(tokenizer: Any, seed: int) -> tuple[Any, Any]:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    head_dim = HIDDEN // HEADS
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _ARCH_SPECIAL["qwen2_5_vl"]}
    config = Qwen2_5_VLConfig(
        text_config=_text_config(
            "qwen2_5_vl_text", len(tokenizer), tokenizer,
            # mrope splits the rotary half-dimension (head_dim / 2) over time, height and width
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]},
        ),
        vision_config=dict(
            depth=2, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_heads=HEADS,
            out_hidden_size=HIDDEN, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            window_size=56, fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}  # a 4x4 patch grid -> 4 image tokens
    image_processor = Qwen2VLImageProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", IMAGE_PLACEHOLDER["qwen2_5_vl"]),
    )
    return model, processor


_BUILDERS = {"llava": _build_llava, "idefics3": _build_idefics3, "qwen2_5_vl": _build_qwen2_5_vl}


def make_tiny_vlm(out_dir: str | Path, arch: str = "llava", seed: int = 0, vocab_size: int = 600) -> Path:
    """Write a tiny random VLM (model, processor, tokenizer, chat template) to `out_dir`.

    `arch` is one of ARCHS. The same seed gives the same weights. Returns the folder, which
    `AutoProcessor.from_pretrained` and `AutoModelForImageTextToText.from_pretrained` load.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _fast_tokenizer(arch, vocab_size)
    torch.manual_seed(seed)
    model, processor = _BUILDERS[arch](tokenizer, seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "TINY_RANDOM_MODEL.txt").write_text(
        f"Randomly initialised {arch} made by builder.dev.tiny_vlm (seed {seed}). "
        "Its answers are noise; for tests only.\n",
        encoding="utf-8",
    )
    return out
