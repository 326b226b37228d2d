"""Tiny stand-ins only tests (and benchmarks) need: the CoBSAT judge's LLaVA and official-layout `.pth` aligners.

The shipped `--tiny` modes never load these, so they live beside the tests, not in `thinkdiff_core.testing`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from thinkdiff_core.testing.tiny import CORPUS, train_bpe, write_clip_preprocessor


def write_tiny_llava(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny random LLaVA-1.5-shaped folder in the llava-hf layout (the CoBSAT judge's loading path).

    CLIP vision tower (28x28 images, 14-pixel patches: 4 image tokens plus CLS), a Llama language model,
    a BPE tokenizer with `<image>` and `<pad>`, and the processor files llava-hf ships
    (`preprocessor_config.json`, `processor_config.json`).
    """
    from tokenizers import processors
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    folder = Path(folder)
    specials = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
    backend = train_bpe(CORPUS + ["USER: ASSISTANT: What is the main object in this image? (1) (2) (10)"], specials)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", additional_special_tokens=["<image>"],
                                        model_input_names=["input_ids", "attention_mask"])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=28, patch_size=14, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"]),
        image_token_index=ids["<image>"], image_seq_length=4, vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=ids["<pad>"],
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<pad>"]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_clip_preprocessor(folder, 28)
    (folder / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaProcessor", "image_token": "<image>", "patch_size": 14,
        "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1,
    }, indent=2))
    return folder


OFFICIAL_TRAIN_CONFIGS: dict[str, dict] = {
    "lvlm": {"model": {"arch": "mllama-vllm-t5-embed-decoder-2", "mm_projector_type": "mlp2x_gelu_t5_norm",
                       "mllama_pretrained_model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct"}},
    "clip": {"model": {"arch": "blip-vision-t5-decoder", "mm_projector_type": "mlp2x_gelu_t5_norm",
                       "blip2_pretrained_model_name_or_path": "Salesforce/blip2-flan-t5-xxl",
                       "vision_downsample_factor": 2}},
}
"""The `config.model` entries of the reference training configs that `load_aligner` reads the variant from."""


def write_official_aligner(path: str | os.PathLike[str], input_size: int, output_size: int = 4096,
                           variant: str = "lvlm", seed: int = 0) -> Path:
    """A random aligner in the official `torch.save` layout `{"model": {"mm_projector.*"}, "config": ...}`.

    The config names the variant as the real `thinkdiff_lvlm.pth` / `thinkdiff_clip.pth` do, so a stand-in
    whose input width is a tiny model's (not 3584 or 1408) still loads as that variant.
    """
    from thinkdiff_core.aligner import Aligner

    torch.manual_seed(seed)
    state = {f"mm_projector.{k}": v for k, v in Aligner(input_size, output_size).state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "config": OFFICIAL_TRAIN_CONFIGS[variant]}, path)
    return path
