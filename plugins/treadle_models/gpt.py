"""TinyGPT: a small causal decoder-only transformer language model (GPT-2 layout)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from treadle_models.tracing import is_tracing

__all__ = ["CausalSelfAttention", "TinyGPT", "TransformerBlock"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``.

    :param d_model: width of the residual stream.
    :param num_heads: attention heads; must divide ``d_model``.
    :param dropout: dropout on the attention weights and on the output projection (training
        only).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Attend causally.

        :param hidden: ``(batch, seq_len, d_model)``, float.
        :param allowed: ``(batch, 1, seq_len, seq_len)`` bool, True where a query may attend
            to a key (the causal mask already applied), or None for the plain causal mask.
        :returns: ``(batch, seq_len, d_model)``, float.
        """
        batch, length, width = hidden.shape
        query, key, value = (
            self.qkv(hidden)
            .view(batch, length, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        dropout_p = self.dropout if self.training else 0.0
        if allowed is None:
            attended = functional.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout_p, is_causal=True
            )
        else:
            # is_causal and attn_mask are exclusive in SDPA: ``allowed`` holds the causal part.
            attended = functional.scaled_dot_product_attention(
                query, key, value, attn_mask=allowed, dropout_p=dropout_p
            )
        merged = attended.transpose(1, 2).reshape(batch, length, width)
        return self.residual_dropout(self.out_proj(merged))  # type: ignore[no-any-return]


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` with a GELU MLP."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, num_heads, dropout)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            nn.Linear(d_ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """:param hidden: ``(batch, seq_len, d_model)``; :param allowed: as in
        :meth:`CausalSelfAttention.forward`."""
        hidden = hidden + self.attention(self.attention_norm(hidden), allowed)
        return hidden + self.mlp(self.mlp_norm(hidden))  # type: ignore[no-any-return]


class TinyGPT(nn.Module):
    """A small GPT-2 style causal language model.

    Token and learned position embeddings, ``num_layers`` pre-LayerNorm blocks of causal
    self-attention and a GELU MLP of width ``d_ff``, a final LayerNorm, and an LM head tied to
    the token embedding. Initialized as GPT-2: normal(0, 0.02) weights, zero biases, and the
    two residual projections of each block scaled by ``1 / sqrt(2 * num_layers)``.

    Padding: with ``attention_mask``, a query attends to the keys at or before it whose mask is
    1 (and always to itself, so a padding query never has an empty row and never gives NaN).
    For right-padded batches, as treadle's collators make, the logits of real tokens are then
    exactly those of the unpadded sequence; the padding positions' logits are meaningless and
    the loss ignores them. Positions count from 0 at the first column, so left-padded input
    shifts the real tokens' positions: pad on the right.

    :param vocab_size: number of token ids.
    :param d_model: embedding and residual width.
    :param num_layers: transformer blocks.
    :param num_heads: attention heads; must divide ``d_model``.
    :param d_ff: hidden width of each block's MLP.
    :param max_seq_len: longest sequence the position embedding covers.
    :param dropout: dropout probability in ``[0, 1)`` (embeddings, attention, residuals).
    :raises ValueError: a size is not positive, ``num_heads`` does not divide ``d_model``, or
        ``dropout`` lies outside ``[0, 1)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_gpt_sizes(
            vocab_size=vocab_size,
            d_model=d_model,
            num_layers=num_layers,
            num_heads=num_heads,
            d_ff=d_ff,
            max_seq_len=max_seq_len,
            dropout=dropout,
        )
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_seq_len, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialization: normal(0, 0.02) for linear and embedding weights, zero biases,
        unit LayerNorms, residual output projections with std ``0.02 / sqrt(2 * num_layers)``."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.num_layers)
        for block in self.blocks:
            assert isinstance(block, TransformerBlock)
            nn.init.normal_(block.attention.out_proj.weight, mean=0.0, std=residual_std)
            output = block.mlp[2]
            assert isinstance(output, nn.Linear)
            nn.init.normal_(output.weight, mean=0.0, std=residual_std)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token logits for every position.

        :param input_ids: ``(batch, seq_len)`` long token ids, ``seq_len <= max_seq_len``.
        :param attention_mask: ``(batch, seq_len)``, 1 (or True) on tokens and 0 on padding;
            None attends to every earlier position.
        :returns: ``(batch, seq_len, vocab_size)`` float logits.
        :raises ValueError: ``input_ids`` is not 2-D, or longer than ``max_seq_len``.
        """
        if input_ids.dim() != 2:
            msg = (
                f"TinyGPT expects input_ids of shape (batch, seq_len), got {tuple(input_ids.shape)}"
            )
            raise ValueError(msg)
        length = input_ids.shape[1]
        # Under torch.jit.trace the comparison would be frozen (with a TracerWarning); the
        # traced graph fails on a too-long input anyway, at the position embedding.
        if not is_tracing() and length > self.max_seq_len:
            msg = (
                f"TinyGPT got a sequence of {length} tokens but its max_seq_len is "
                f"{self.max_seq_len}: truncate the input (the task's max_seq_len) or build the "
                f"model with a larger max_seq_len"
            )
            raise ValueError(msg)
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.token_embedding(input_ids) + self.position_embedding(positions)
        hidden = self.embedding_dropout(hidden)
        allowed = None if attention_mask is None else _allowed(attention_mask, positions)
        for block in self.blocks:
            hidden = block(hidden, allowed)
        return self.lm_head(self.final_norm(hidden))  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``input_ids``, one at a time.

        The context is cut to the last ``max_seq_len`` tokens before each step. The model is
        put in eval mode for sampling and restored to its previous mode afterwards.

        :param input_ids: ``(batch, seq_len)`` long prompt ids, unpadded.
        :param max_new_tokens: tokens to add, >= 0.
        :param temperature: > 0; logits are divided by it (lower is greedier).
        :param top_k: sample only among the ``top_k`` likeliest tokens; None for all.
        :param generator: random generator for reproducible samples.
        :returns: ``(batch, seq_len + max_new_tokens)`` long: the prompt and its continuation.
        :raises ValueError: a bad argument, or an empty prompt.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            shape = tuple(input_ids.shape)
            msg = f"generate needs input_ids of shape (batch, seq_len >= 1): {shape}"
            raise ValueError(msg)
        if max_new_tokens < 0:
            msg = f"max_new_tokens must be >= 0: {max_new_tokens}"
            raise ValueError(msg)
        if not temperature > 0 or not math.isfinite(temperature):
            msg = f"temperature must be a finite number > 0: {temperature}"
            raise ValueError(msg)
        if top_k is not None and top_k < 1:
            msg = f"top_k must be >= 1 or None: {top_k}"
            raise ValueError(msg)
        was_training = self.training
        self.eval()
        try:
            tokens = input_ids
            for _ in range(max_new_tokens):
                context = tokens[:, -self.max_seq_len :]
                logits = self(context)[:, -1, :] / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probabilities = torch.softmax(logits, dim=-1)
                following = torch.multinomial(probabilities, 1, generator=generator)
                tokens = torch.cat([tokens, following], dim=1)
        finally:
            self.train(was_training)
        return tokens


def _allowed(attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, seq_len, seq_len)`` bool: earlier-or-same real keys, and the diagonal.

    Built from ``positions`` rather than sliced from a stored mask, so torch.export and
    torch.jit.trace keep the sequence axis dynamic (slicing specializes it).
    """
    query = positions[:, None]
    key = positions[None, :]
    real_keys = (attention_mask != 0)[:, None, None, :]
    return ((key <= query) & real_keys) | (key == query)


def _check_gpt_sizes(**sizes: int | float) -> None:
    problems = [
        f"{name} must be >= 1: {value}"
        for name, value in sizes.items()
        if name != "dropout" and value < 1
    ]
    dropout = sizes["dropout"]
    if not 0 <= dropout < 1:
        problems.append(f"dropout must lie in [0, 1): {dropout}")
    if not problems and sizes["d_model"] % sizes["num_heads"]:
        problems.append(
            f"d_model ({sizes['d_model']}) must be divisible by num_heads ({sizes['num_heads']}): "
            f"choose num_heads among the divisors of d_model"
        )
    if problems:
        msg = "cannot build TinyGPT: " + "; ".join(problems)
        raise ValueError(msg)
