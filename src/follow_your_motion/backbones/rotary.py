"""The video tokens' rotary tables as DiTFlow's positions mode rewrites them (`Backbone.rotary_transform`): the
transform's type, and a rotary embedding's output passed through one whatever form it has (one tensor or a tuple,
float or complex)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError

# Rewrites the rotary tables of the video tokens (`Backbone.rotary_transform`): the float tensors a family's rotary
# embedding gives them, in its order and shapes (complex tables as their real view, `through_transform`), to tables
# of the same shapes.
RotaryTransform = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


def through_transform(tables: torch.Tensor | tuple[torch.Tensor, ...], transform: RotaryTransform
                      ) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """A rotary embedding's output (one tensor or a tuple) through `transform`, returned as it came. Complex tables
    go as their real view (..., 2) and come back complex, so the transform always sees float tensors; anything
    else is refused rather than passed by untouched."""
    single = isinstance(tables, torch.Tensor)
    parts = (tables,) if single else tuple(tables)
    if not all(isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) for t in parts):
        raise InputError("this model's rotary embedding gives no float or complex tables to optimise; set "
                         "guidance.ditflow.optimise: latent")
    out = transform(tuple(torch.view_as_real(t) if t.is_complex() else t for t in parts))
    out = tuple(torch.view_as_complex(o.contiguous()) if t.is_complex() else o for t, o in zip(parts, out, strict=True))
    return out[0] if single else out
