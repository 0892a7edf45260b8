"""CLIP and DINO encoders for the appearance metrics: found offline, loaded once, frames and prompts embedded.

Weights are never downloaded. A model is a local directory (what ``save_pretrained`` of the model and its
tokenizer / image processor writes) or a hub id whose snapshot is already in the user's Hugging Face cache.
Anything else - no such directory, not cached, another kind of model, weights missing from the checkpoint -
is a ValueError naming the model and the option that provides it, so the CLI prints one line instead of a
transformers traceback (and a half-loaded model never scores anything with random weights).

Loaded encoders are cached per (source, device), so a benchmark loads each model once. Every encoder carries
``constants``: where the weights came from, the image preprocessing and which embedding is used; the metrics
(``appearance``) record them with each score.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError

BATCH = 16
"""Frames per forward pass (bounds memory on long videos; the embeddings do not depend on it)."""
PREPROCESSING_KEYS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor", "do_normalize",
    "image_mean", "image_std", "do_convert_rgb",
)
"""Image-processor settings recorded with a score (``resample``: PIL code, 2 bilinear, 3 bicubic)."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
"""One must exist next to a CLIP model: without it transformers quietly builds a tokenizer with no vocabulary."""
UNUSED_WEIGHTS = ("mask_token",)
"""Parameters a checkpoint may lack without changing an embedding (DINOv2's mask token: masked training only)."""


@dataclass(frozen=True, eq=False)
class ImageEncoder:
    """A vision model with its image processor; ``features`` says which embedding of a frame is used."""

    model: Any
    image_processor: Any
    device: str
    constants: dict

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_images(self, frames: np.ndarray) -> np.ndarray:
        """(T, D) float64 embeddings of uint8 (T, H, W, 3) RGB frames, preprocessed by the model's processor."""
        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), BATCH):
                batch = self.image_processor(images=list(frames[start : start + BATCH]), return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device, torch.float32)
                out.append(self.features(pixels).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)


@dataclass(frozen=True, eq=False)
class ClipEncoder(ImageEncoder):
    """CLIP: projected image and text embeddings, the vectors CLIP's own similarity compares."""

    tokenizer: Any

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(self.model.vision_model(pixel_values=pixel_values).pooler_output)

    def embed_text(self, prompt: str) -> tuple[np.ndarray, dict]:
        """(D,) float64 embedding of `prompt` (cut to the text model's length) and its token count."""
        limit = int(self.constants["text_max_length"])
        tokens = len(self.tokenizer(prompt)["input_ids"])
        inputs = self.tokenizer([prompt], truncation=True, max_length=limit, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            pooled = self.model.text_model(input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"]).pooler_output
            vector = self.model.text_projection(pooled)[0].float().cpu().numpy().astype(np.float64)
        return vector, {"prompt_tokens": tokens, "prompt_truncated": tokens > limit}


@dataclass(frozen=True, eq=False)
class DinoEncoder(ImageEncoder):
    """DINO / DINOv2: the CLS token after the final layer norm (DINO's own image representation)."""

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state[:, 0]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _model_dir(source: str, kind: str, hint: str) -> Path:
    """The local directory of `source`: itself, or its snapshot in the Hugging Face cache (no network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except (OSError, ValueError):  # not cached, or not even a valid hub id
        raise InputError(f"{kind} model {source!r} not found: no such directory and no copy in the Hugging Face "
                         f"cache (weights are never downloaded here); {hint}") from None


def _load(source: str, kind: str, option: str, classes: dict[str, tuple[Any, dict]], parts: str, device: str,
          with_tokenizer: bool = False) -> tuple[Any, Any, Any, Path]:
    """(model, image processor, tokenizer or None, directory) of a `kind` model; `classes` maps each accepted
    ``model_type`` to (model class, its loading options)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    hint = f"pass a directory holding the {kind} model ({parts}, as save_pretrained writes them) with {option} PATH"
    directory = _model_dir(source, kind, hint)
    where = f"{kind} model {source!r} ({directory})"
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{where}: no usable config.json ({_first_line(err)}); {hint}") from None
    if config.model_type not in classes:
        raise InputError(f"{where} is a {config.model_type!r} model; {option} needs one of: {', '.join(classes)}")
    if with_tokenizer and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{where} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); {hint}")
    cls, extra = classes[config.model_type]
    try:
        model, info = cls.from_pretrained(directory, local_files_only=True, output_loading_info=True, **extra)
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True) if with_tokenizer else None
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"{where} cannot be loaded ({_first_line(err)}); {hint}") from None
    missing = sorted(k for k in info["missing_keys"] if not any(u in k for u in UNUSED_WEIGHTS))
    if missing:
        raise InputError(f"{where}: {len(missing)} weight(s) missing from the checkpoint ({', '.join(missing[:3])}), "
                         f"so it would score with random weights; {hint}")
    return model.to(device).eval(), processor, tokenizer, directory


def _common_constants(source: str, directory: Path, model: Any, vision: Any, processor: Any,
                      device: str) -> dict:
    import transformers

    settings = processor.to_dict()
    return {
        "model": source, "model_dir": str(directory), "model_class": type(model).__name__,
        "image_size": vision.image_size, "patch_size": vision.patch_size,
        "image_processor": {"class": type(processor).__name__} | {k: settings[k] for k in PREPROCESSING_KEYS
                                                                  if k in settings},
        "dtype": "float32", "device": device, "transformers": transformers.__version__,
    }


def load_clip(source: str | Path, device: str = "cpu") -> ClipEncoder:
    """The CLIP model at `source` (directory or cached hub id) on `device`, loaded once; ValueError if absent."""
    return _load_clip(str(source), device)


def load_dino(source: str | Path, device: str = "cpu") -> DinoEncoder:
    """The DINO (ViT) or DINOv2 model at `source` (directory or cached hub id) on `device`, loaded once;
    ValueError if absent."""
    return _load_dino(str(source), device)


@functools.cache
def _load_clip(source: str, device: str) -> ClipEncoder:
    from transformers import CLIPModel

    model, processor, tokenizer, directory = _load(source, "CLIP", "--clip", {"clip": (CLIPModel, {})},
                                                   "config, weights, tokenizer and preprocessor_config.json", device,
                                                   with_tokenizer=True)
    constants = _common_constants(source, directory, model, model.config.vision_config, processor, device) | {
        "image_embedding": "visual_projection(vision pooler output = post-layernorm CLS token), as "
                           "CLIPModel.get_image_features",
        "text_embedding": "text_projection(text pooler output = final-layernorm EOS token), as "
                          "CLIPModel.get_text_features",
        "text_max_length": model.config.text_config.max_position_embeddings,
    }
    return ClipEncoder(model=model, image_processor=processor, device=device, constants=constants,
                       tokenizer=tokenizer)


@functools.cache
def _load_dino(source: str, device: str) -> DinoEncoder:
    from transformers import Dinov2Model, ViTModel

    classes = {"dinov2": (Dinov2Model, {}), "vit": (ViTModel, {"add_pooling_layer": False})}  # ViT: no pooler
    model, processor, _, directory = _load(source, "DINO", "--dino", classes,
                                           "config, weights and preprocessor_config.json", device)
    constants = _common_constants(source, directory, model, model.config, processor, device) | {
        "model_type": model.config.model_type,
        "embedding": "CLS token of last_hidden_state (after the final layer norm); ViT's pooler is not used",
    }
    return DinoEncoder(model=model, image_processor=processor, device=device, constants=constants)
