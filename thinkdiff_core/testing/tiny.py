"""Tiny random-weight stand-ins of the real models, written to disk as real Hugging Face folders.

Tests, benchmarks, the training demo and every `--tiny` mode use these so that the whole path, loading
code included, runs offline on a CPU. Nothing here is a stub: the folders hold genuine transformers
configs, weights and tokenizers, just very small ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .synthetic import all_captions

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]

QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The Qwen2-VL chat format (system default, `Picture i:` labels under `add_vision_id`), written here."""

CORPUS = [
    "I give you several words and pictures. First, please analyse what the next picture is. Then give me a "
    "detailed diffusion prompt to describe the next picture. Please only provide me the detailed prompt and "
    "start the answer with 'Create an image'.",
    "You are a helpful assistant. Picture Word Create an image of a car, a cup, a box, an apple.",
    "Describe the image concisely. Generate a prompt that can recreate the image in a 2D diffusion model.",
] + all_captions()

VISION_MEAN, VISION_STD = list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
"""Qwen-VL's and BLIP-2's image normalisation (CLIP's)."""


def train_bpe(corpus: list[str], special_tokens: list[str], vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE trained in memory: the same kind of tokenizer Qwen ships, at toy size."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(CORPUS, QWEN_SPECIAL_TOKENS),
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tokenizer


def _qwen_vl_config(model_type: str, vocab_size: int, token_ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, rope_theta=10000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, tie_word_embeddings=False,
        bos_token_id=token_ids["bos"], eos_token_id=token_ids["eos"], pad_token_id=token_ids["pad"],
    )
    ids = dict(
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"],
        bos_token_id=token_ids["bos"], eos_token_id=token_ids["eos"], pad_token_id=token_ids["pad"],
        tie_word_embeddings=False,
    )
    if model_type == "qwen2_vl":
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids), 14
    if model_type == "qwen2_5_vl":
        vision = dict(depth=1, hidden_size=32, out_hidden_size=64, num_heads=2, intermediate_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids), 14
    if model_type == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text.update(head_dim=16, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True})
        vision = dict(depth=2, hidden_size=32, out_hidden_size=64, num_heads=2, intermediate_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                      deepstack_visual_indexes=[0])
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids), 16
    raise ValueError(f"no tiny config for {model_type!r}")


def write_tiny_qwen_vl(folder: str | os.PathLike[str], model_type: str = "qwen2_vl", seed: int = 0) -> Path:
    """Write a tiny random Qwen2-VL / Qwen2.5-VL / Qwen3-VL folder loadable with `from_pretrained`.

    Images are resized to between 2x2 and 4x4 merged patches (4 to 16 image tokens each).
    """
    from transformers import AutoModelForImageTextToText, GenerationConfig

    folder = Path(folder)
    tokenizer = _qwen_tokenizer()
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    token_ids.update(bos=token_ids["<|endoftext|>"], eos=token_ids["<|im_end|>"], pad=token_ids["<|endoftext|>"])
    # the embedding is padded to a multiple of 64 rows, as Qwen's are (151936, 152064): bitsandbytes' CPU 4-bit
    # kernels need the head's rows in blocks of 32
    vocab_size = -(-len(tokenizer) // 64) * 64
    config, patch_size = _qwen_vl_config(model_type, vocab_size, token_ids)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[token_ids["<|im_end|>"], token_ids["<|endoftext|>"]], pad_token_id=token_ids["<|endoftext|>"],
        bos_token_id=token_ids["<|endoftext|>"],
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    factor = patch_size * 2
    min_pixels, max_pixels = (2 * factor) ** 2, (4 * factor) ** 2
    processor_config = {
        "image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        "image_mean": VISION_MEAN, "image_std": VISION_STD, "patch_size": patch_size,
        "temporal_patch_size": 2, "merge_size": 2, "min_pixels": min_pixels, "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2))
    return folder


def _t5_tokenizer(corpus: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A Unigram tokenizer like T5's sentencepiece one: `<pad>`=0, `</s>`=1, `<unk>`=2, EOS appended."""
    from tokenizers import normalizers, processors

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def write_tiny_t5(folder: str | os.PathLike[str], corpus: list[str] | None = None, d_model: int = 64,
                  seed: int = 0) -> Path:
    """Write a tiny random Flan-T5-shaped model (gated-GELU) and its tokenizer.

    transformers 5 ties the head of a freshly made T5 to its embedding; real Flan-T5 loads untied.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    tokenizer = _t5_tokenizer(corpus or CORPUS)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=2, num_decoder_layers=2,
        num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- BLIP-2 (the ThinkDiff-CLIP vision tower) -------------------------------------------------------------------


TINY_BLIP2_VISION_WIDTH = 32
"""`tiny_blip2_config`'s default tower width: the tiny CLIP aligner's input size."""


def tiny_blip2_config(vision_width: int = TINY_BLIP2_VISION_WIDTH, vision_layers: int = 2, text_width: int = 64, text_layers: int = 2,
                      text_vocab_size: int = 2048, image_size: int = 224, patch_size: int = 14):
    """A `Blip2Config` shaped like blip2-flan-t5-xxl: EVA-style tower (real 224px / patch-14 geometry by default,
    so 16x16 patches and 65 recipe tokens), a Q-Former and a gated-GELU T5, all at tiny width.

    The vision initializer range is 0.02 (the real config's 1e-10 would make a random tower output ~constant).
    """
    from transformers import Blip2Config

    vision = dict(hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=vision_layers,
                  num_attention_heads=max(1, vision_width // 16), image_size=image_size, patch_size=patch_size,
                  initializer_range=0.02)
    qformer = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   encoder_hidden_size=vision_width, vocab_size=128)
    text = dict(model_type="t5", d_model=text_width, d_kv=16, d_ff=2 * text_width, num_layers=text_layers,
                num_decoder_layers=text_layers, num_heads=max(1, text_width // 16), vocab_size=text_vocab_size,
                feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0)
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4)


def write_tiny_blip2(folder: str | os.PathLike[str], seed: int = 0, **config_sizes) -> Path:
    """Write a tiny random blip2-flan-t5-xxl-like folder: config.json, preprocessor_config.json, 4 safetensors
    shards and `model.safetensors.index.json`.

    The shards are laid out so that a loader must follow the index: shard 1 mixes the first half of the
    vision tensors with half of the language model, shard 2 holds the rest of the vision tower with the
    Q-Former, shards 3 and 4 hold only language-model tensors. `config_sizes` go to `tiny_blip2_config`
    (a wide `text_width`/`text_vocab_size` gives a language model much larger than the tower).
    """
    from safetensors.torch import save_file
    from transformers import Blip2ForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_blip2_config(**config_sizes)
    torch.manual_seed(seed)
    state, seen = {}, set()
    for name, tensor in Blip2ForConditionalGeneration(config).state_dict().items():
        if tensor.data_ptr() not in seen:  # tied T5 embeddings are stored once, as the real files do
            seen.add(tensor.data_ptr())
            state[name] = tensor.contiguous()
    vision = [k for k in state if k.startswith("vision_model.")]
    language = [k for k in state if k.startswith("language_model.")]
    others = [k for k in state if k not in vision and k not in language]
    half, quarter = len(vision) // 2, len(language) // 4
    shards = [language[: 2 * quarter] + vision[:half], vision[half:] + others,
              language[2 * quarter: 3 * quarter], language[3 * quarter:]]
    weight_map = {}
    for number, names in enumerate(shards, start=1):
        shard = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: state[k] for k in names}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config.save_pretrained(folder)
    size = config.vision_config.image_size
    processor_config = {
        "image_processor_type": "BlipImageProcessor", "processor_class": "Blip2Processor", "do_convert_rgb": True,
        "do_resize": True, "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": VISION_MEAN, "image_std": VISION_STD,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor_config, indent=2))
    return folder


# --- CLIP (FLUX's CLIP-L text encoder; CoBSAT's similarity model) --------------------------------------------

TINY_CLIP_HIDDEN = 32
"""The tiny CLIP-L's width, hence the tiny FLUX's `pooled_projection_dim` (768 in FLUX.1-dev)."""

CLIP_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]


def write_tiny_clip_text(encoder_folder: str | os.PathLike[str], tokenizer_folder: str | os.PathLike[str],
                         hidden_size: int = TINY_CLIP_HIDDEN, seed: int = 0) -> tuple[Path, Path]:
    """A tiny CLIP-L text encoder and its tokenizer, laid out as in FLUX.1-dev (`text_encoder/`, `tokenizer/`).

    The tokenizer is a genuine CLIP BPE (`vocab.json` + `merges.txt`) at character level: every byte
    character with and without the `</w>` word-end mark, no merges, the two CLIP special tokens last
    (as in CLIP, where `<|endoftext|>` has the highest id). Both transformers 4 and 5 read these files.
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    encoder_folder, tokenizer_folder = Path(encoder_folder), Path(tokenizer_folder)
    tokenizer_folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pieces = alphabet + [c + "</w>" for c in alphabet] + CLIP_SPECIAL_TOKENS
    vocab = {piece: index for index, piece in enumerate(pieces)}
    (tokenizer_folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tokenizer_folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (tokenizer_folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (tokenizer_folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size, projection_dim=hidden_size,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    CLIPTextModel(config).save_pretrained(encoder_folder)
    return encoder_folder, tokenizer_folder


def write_clip_preprocessor(folder: Path, size: int) -> None:
    """A CLIPImageProcessor config at `size` pixels (resize, centre crop, CLIP normalisation), as CLIP and LLaVA ship it."""
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": VISION_MEAN, "image_std": VISION_STD,
        "do_convert_rgb": True,
    }, indent=2))


def write_tiny_clip(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny random CLIP (text and vision towers, `CLIPModel`) with `write_tiny_clip_text`'s tokenizer and a
    CLIP image processor at 32 px: the CoBSAT similarity metric's model (`openai/clip-vit-base-patch32`) in small."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    folder = Path(folder)
    text_folder, _ = write_tiny_clip_text(folder / "text", folder, seed=seed)
    text = CLIPTextConfig.from_pretrained(text_folder)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=text.projection_dim)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                         projection_dim=text.projection_dim)).save_pretrained(folder)
    write_clip_preprocessor(folder, 32)
    return folder
