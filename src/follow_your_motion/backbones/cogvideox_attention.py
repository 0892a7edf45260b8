"""CogVideoX's joint self-attention computed as `CogVideoXAttnProcessor2_0` computes it, with q and k kept: what
`capture_qk` reads (`joint_qk`) and what the self-attentions run while DiTFlow optimises the RoPE tables
(`RotaryProcessor`), whose gradient needs the unrotated q and k that diffusers' processor overwrites in place."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn
from torch.nn import functional as F


def joint_qk(attn: nn.Module, hidden: torch.Tensor, text: torch.Tensor,
             rotary: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k (B, heads, text + video tokens, head_dim) exactly as `CogVideoXAttnProcessor2_0` computes them: the
    projections over [text, video], per-head LayerNorm, then RoPE on the video tokens, written into copies (same
    strides): the processor overwrites the rows it rotated, which a gradient to the tables needs (`RotaryProcessor`)."""
    tokens = torch.cat([text, hidden], dim=1)
    batch = tokens.shape[0]
    q, k = attn.to_q(tokens), attn.to_k(tokens)
    head_dim = k.shape[-1] // attn.heads
    q = q.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    k = k.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if rotary is not None:
        n = text.shape[1]
        rotated = apply_rotary_emb(q[:, :, n:], rotary), apply_rotary_emb(k[:, :, n:], rotary)
        q, k = q.clone(), k.clone()
        q[:, :, n:], k[:, :, n:] = rotated
    return q, k


class RotaryProcessor:
    """`CogVideoXAttnProcessor2_0`'s self-attention, the same values, with q and k from `joint_qk`: set while the
    RoPE tables are optimised (`rotary_transform`), whose gradient needs the unrotated q and k that diffusers'
    processor overwrites in place (in float32, where its rotation keeps them rather than a float copy)."""

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None
                 = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = encoder_hidden_states.size(1)
        tokens = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, length, _ = tokens.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        q, k = joint_qk(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        head_dim = q.shape[-1]
        v = attn.to_v(tokens).view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)))
        text, video = out.split([n, out.size(1) - n], dim=1)
        return video, text
