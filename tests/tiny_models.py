"""Tiny models built offline for the tests: :func:`build_tiny_vlm` writes a randomly initialised
vision-language model that :class:`~mnemobot.agent.llm.HFVisionChatModel` loads.

``tests/`` is not a package (pytest runs with ``--import-mode=importlib``): the test modules that
need it load this file by path, as ``test_store.py`` loads ``store_crash_writer.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer() -> Any:
    """A byte-level tokenizer built offline: 256 byte tokens and the chat/image special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=_TINY_CHAT_TEMPLATE)


def build_tiny_vlm(out_dir: str | os.PathLike, family: str = "llava", *, seed: int = 0, image_size: int = 32,
                   patch_size: int = 8, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a tiny randomly initialised vision-language model that
    :class:`~mnemobot.agent.llm.HFVisionChatModel` loads.

    Family ``llava``: a CLIP vision tower and a Llama text model (``layers`` each), a byte-level
    tokenizer built with the ``tokenizers`` library and a CLIP image processor (PIL backend), all
    made offline and saved with ``save_pretrained``. Images are resized to ``image_size`` and
    become ``(image_size // patch_size) ** 2`` image tokens. Useful to test the image path; its
    answers are noise.
    """
    if family != "llava":
        raise ValueError(
            f"unknown tiny VLM family {family!r}: only 'llava' builds offline here "
            "(Qwen2-VL's processor needs a video processor, which needs torchvision)")
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer()
    image_token_id = tok.convert_tokens_to_ids("<image>")
    heads = max(1, hidden_size // 16)
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size})
    # The CLIP tower adds a CLS token; the "default" strategy drops it again.
    proc = LlavaProcessor(image_processor=image_proc, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=_TINY_CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=hidden_size // 2, intermediate_size=hidden_size, num_hidden_layers=layers,
            num_attention_heads=max(1, heads // 2), image_size=image_size, patch_size=patch_size,
            projection_dim=hidden_size // 2),
        text_config=LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=4096, bos_token_id=None, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id),
        image_token_id=image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
