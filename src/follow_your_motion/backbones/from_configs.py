"""A pipeline built from its configs alone, with no weights: what `fym plan` loads instead of the checkpoint.

Inside `weightless(folder, mode)`, `loading.load_pipeline` builds each component of `folder`'s model_index.json from its
config (diffusers and transformers classes alike) instead of reading weights, so the backbone, the method and the
pipeline run unchanged. The caller gives the tensor mode: under torch's `FakeTensorMode` every parameter is a fake
tensor (shapes, dtypes and each operation's output size exact, nothing allocated or computed). Tokenizers whose
files are not shipped are word-level stand-ins in the class the pipeline declares: only how many tokens they pad
to matters for memory, and the pipelines pad to a fixed length.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

# the folder of configs to build pipelines from, and the tensor mode their models' parameters are made under
CONFIGS_ONLY: ContextVar[tuple[Path, contextlib.AbstractContextManager] | None] = ContextVar("configs_only",
                                                                                           default=None)
STAND_IN_WORDS = ("a", "tiger", "walks", "through", "snow", "the", "in", "on", "of", "and", "with")


@contextlib.contextmanager
def weightless(folder: Path, mode: contextlib.AbstractContextManager) -> Iterator[None]:
    """While active, pipelines are built from `folder`'s configs (whatever source a backbone is asked to load), their
    models' parameters made under `mode` (a `FakeTensorMode`); everything else (schedulers, the backbone) as usual."""
    token = CONFIGS_ONLY.set((Path(folder), mode))
    try:
        yield
    finally:
        CONFIGS_ONLY.reset(token)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Modules made in a block get parameters of `dtype` (a fake tensor cannot be converted after it is made)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def modules_stay() -> Iterator[None]:
    """`Module.to` leaves modules where they are: a fake parameter cannot be moved (torch swaps it, which its
    fake-tensor bookkeeping forbids), and a plan counts what is on the device from the placement rules instead."""
    original = nn.Module.to

    def stay(self: nn.Module, *args, **kwargs) -> nn.Module:
        return self

    nn.Module.to = stay
    try:
        yield
    finally:
        nn.Module.to = original


def stand_in_tokenizer(chat_prefix: int = 0):
    """A word-level fast tokenizer; with `chat_prefix`, a chat template writing that many system tokens before
    the user's words (HunyuanVideo 1.5 crops its system prompt's `prompt_template_encode_start_idx` tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "sys": 3} | {w: i + 4 for i, w in enumerate(STAND_IN_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    if chat_prefix:
        fast.chat_template = ("{{ 'sys ' * " + str(chat_prefix) + " }}{% for m in messages %}"
                              "{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}")
    return fast


def _keep_float32(model: nn.Module) -> None:
    """diffusers' `_keep_in_fp32_modules`, as `from_pretrained` keeps them whatever the dtype."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, param in model.named_parameters():
        if any(part in keep for part in name.split(".")):
            param.data = param.data.float()


def build_component(folder: Path, name: str, library: str, class_name: str, dtype: torch.dtype,
                    mode: contextlib.AbstractContextManager):
    """One component of a pipeline from `folder/name`'s config: models with parameters of `dtype`, schedulers and
    processors as they are, tokenizers as stand-ins where their files are not there."""
    import diffusers
    import transformers

    # a pipeline's own modules are named by its package ("ltx2": LTX-2's text connectors and vocoder)
    owner = {"diffusers": diffusers, "transformers": transformers}.get(library) or importlib.import_module(
        f"diffusers.pipelines.{library}")
    cls = getattr(owner, class_name)
    where = folder / name
    if "Tokenizer" in class_name or (class_name.endswith("Processor") and not where.is_dir()):  # Qwen2VLProcessor
        if class_name == "ByT5Tokenizer":  # bytes: needs no vocabulary file
            return cls()
        return stand_in_tokenizer()
    if issubclass(cls, diffusers.ModelMixin):
        with mode, default_dtype(dtype):
            model = cls.from_config(cls.load_config(where))
        _keep_float32(model)
        return model.eval()
    if issubclass(cls, transformers.PreTrainedModel):
        try:
            from transformers.initialization import no_init_weights
        except ImportError:  # transformers 4.x
            from transformers.modeling_utils import no_init_weights

        config = transformers.AutoConfig.from_pretrained(where)
        # no initialisation: its values mean nothing here, and some (SigLIP's) read tensor values, which a fake can't;
        # skipping it also skips tying shared weights (UMT5's and Gemma 3's embeddings), done here as loading does
        with mode, default_dtype(dtype), no_init_weights():
            model = cls._from_config(config, dtype=dtype)
            model.tie_weights()
            return model.eval()
    return cls.from_pretrained(folder, subfolder=name) if library != "transformers" else cls.from_pretrained(where)


def pipeline_from_configs(folder: Path, mode: contextlib.AbstractContextManager,
                          dtypes: dict[str, torch.dtype] | torch.dtype):
    """The pipeline of `folder`'s model_index.json with every component built from its config (no weights);
    `dtypes` as `from_pretrained` takes them (one dtype, or per component with a "default")."""
    import diffusers

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{folder}: no readable model_index.json ({err})") from err
    per = dtypes if isinstance(dtypes, dict) else {"default": dtypes}
    components, options = {}, {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            library, class_name = value
            components[name] = None if class_name is None else build_component(
                folder, name, library, class_name, per.get(name, per["default"]), mode)
        else:
            options[name] = value
    pipe = getattr(diffusers, index["_class_name"])(**components, **options)
    prefix = getattr(pipe, "prompt_template_encode_start_idx", 0)
    tokenizer = getattr(pipe, "tokenizer", None)
    if prefix and getattr(tokenizer, "chat_template", None) is None:
        pipe.tokenizer = stand_in_tokenizer(prefix)
    return pipe
