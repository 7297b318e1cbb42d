"""The BERT layers shared by hm_hf's VisualBERT, UNITER and ViLBERT, and how they skip padding.

(Their classification head and loss are in `hm_hf.models.heads`, loading a BERT checkpoint into them in
`hm_hf.models.bert_weights`.)

Why a shared module: the three architectures use the very same transformer layer, and keeping one copy
means one attention function (`attend`), one gradient-checkpointing path and one module naming that the PEFT
code can rely on. `attend` runs ``torch.nn.functional.scaled_dot_product_attention`` or, when the model's
config says ``_attn_implementation == "eager"`` (``from_pretrained(..., attn_implementation="eager")`` or
``model.set_attn_implementation("eager")``), the explicit softmax(QK^T / sqrt(d)) V; both give the same outputs. The naming is exactly
transformers' BERT naming, so BERT / VisualBERT / UNITER checkpoints map onto it key for key::

    embeddings.{word_embeddings,position_embeddings,token_type_embeddings,LayerNorm}
    encoder.layer.N.attention.self.{query,key,value}
    encoder.layer.N.attention.output.{dense,LayerNorm}
    encoder.layer.N.intermediate.dense
    encoder.layer.N.output.{dense,dropout,LayerNorm}      # forward: LayerNorm(dropout(dense(h)) + input)
    pooler.dense

Padding is not computed: when a batch carries padded positions, :class:`BertEncoder` gathers the real
tokens into one (tokens, hidden) matrix (:class:`TokenPacking`) and runs every position-wise part of a layer
(Q/K/V and output projections, feed-forward, LayerNorms, dropout, PEFT adapters) on it; only attention
itself goes back to the padded (batch, seq, hidden) layout, with a key mask. Those parts are ~95% of a
layer's FLOPs at BERT-base size, so a batch padded to 63% real tokens costs ~63% of the padded step.

Every module takes its sizes as explicit arguments (so a ViLBERT visual stream of hidden size 1024 can be
built from the same classes) and has a ``from_config(config, prefix="")`` constructor that reads
``{prefix}hidden_size``, ``{prefix}num_attention_heads`` ... from any config.

Example:
    >>> import torch
    >>> from hm_hf.models.bert_layers import BertEncoder
    >>> enc = BertEncoder(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    >>> enc(torch.randn(1, 3, 32), torch.tensor([[1, 1, 0]])).last_hidden_state.shape
    torch.Size([1, 3, 32])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "LAYER_CONFIG_FIELDS",
    "BertAttention",
    "BertEmbeddings",
    "BertEncoder",
    "BertIntermediate",
    "BertLayer",
    "BertOutput",
    "BertPooler",
    "BertSelfAttention",
    "BertSelfOutput",
    "TokenPacking",
    "attend",
    "attention_implementation",
    "layer_kwargs_from_config",
    "make_attention_mask",
    "padding_mask_as_bool",
    "run_layers",
]

#: config attributes (without prefix) that size one transformer layer
LAYER_CONFIG_FIELDS = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "layer_norm_eps",
)

_LAYER_DEFAULTS = {"hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                   "layer_norm_eps": 1e-12}


def layer_kwargs_from_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """Read the layer sizes ``{prefix}hidden_size`` ... from ``config`` (``prefix="v_"`` for a visual stream).

    ``layer_norm_eps`` and the dropouts fall back to the un-prefixed value, then to BERT's defaults.
    """
    out = {}
    for name in LAYER_CONFIG_FIELDS:
        if hasattr(config, prefix + name):
            out[name] = getattr(config, prefix + name)
        elif name in _LAYER_DEFAULTS:
            out[name] = getattr(config, name, _LAYER_DEFAULTS[name])
        else:
            raise AttributeError(f"{type(config).__name__} has no attribute {prefix + name!r} needed to build a layer")
    return out


def padding_mask_as_bool(mask: torch.Tensor) -> torch.Tensor:
    """A (B, S) 1/0 padding mask as booleans; refuses float masks holding anything else (an additive
    0/-10000 mask would otherwise read as all True)."""
    if mask.is_floating_point() and not torch.compiler.is_compiling() and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("attention masks are 1 for real tokens and 0 for padding; this one holds other values "
                         "(an additive mask?): pass the tokenizer's / collator's 1/0 attention_mask")
    return mask.bool()


def make_attention_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Turn a (B, S) 1/0 key mask into SDPA's boolean (B, 1, 1, S) mask (True = attend).

    Returns None when nothing is masked, which lets SDPA pick its fused kernels (except under
    ``torch.compile``, where that data-dependent check would break the graph). A boolean mask is used
    rather than an additive one because it keeps its meaning under fp16/bf16 autocast.
    """
    if mask is None:
        return None
    if mask.dim() != 2:
        raise ValueError(f"attention mask must be (batch, seq_len), got shape {tuple(mask.shape)}")
    mask = padding_mask_as_bool(mask)
    if not torch.compiler.is_compiling() and bool(mask.all()):
        return None
    return mask[:, None, None, :]


class TokenPacking:
    """Where the real tokens of a padded (B, S) batch are: moves hidden states between the padded
    (B, S, H) layout and a packed (N, H) matrix of the N real tokens ("unpadding").

    Built once per forward (per stream for ViLBERT) from the 1/0 mask, with one host sync (``nonzero``);
    :meth:`pack` and :meth:`unpack` are an index_select and an index_copy on the flattened batch, both
    differentiable. ``attention_mask`` is the SDPA key mask for the attention that runs on the padded layout.

    Padded positions come back as zeros (computed ones carry no information either: nothing attends to
    them). The poolers read position 0, so text must be right-padded, as tokenizers and `MemeCollator` do.

    Example:
        >>> import torch
        >>> packing = TokenPacking(torch.tensor([[1, 1, 0], [1, 0, 0]]))
        >>> packing.pack(torch.arange(6.).view(2, 3, 1)).flatten().tolist()
        [0.0, 1.0, 3.0]
        >>> packing.unpack(torch.tensor([[1.], [2.], [3.]])).squeeze(-1).tolist()
        [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]
    """

    #: pack only when at least this fraction of a batch's positions is padding: below it, the gathers and
    #: scatters cost about what they save (an estimate from memory traffic vs. matmul time on a GPU)
    MIN_PADDING = 0.05

    def __init__(self, mask: torch.Tensor):
        if mask.dim() != 2:
            raise ValueError(f"padding mask must be (batch, seq_len), got shape {tuple(mask.shape)}")
        mask = padding_mask_as_bool(mask)
        self.batch_size, self.seq_len = mask.shape
        self.indices = mask.reshape(-1).nonzero().squeeze(1)
        self.attention_mask = mask[:, None, None, :]

    @classmethod
    def for_mask(cls, mask: torch.Tensor | None, enabled: bool = True) -> TokenPacking | None:
        """A packing for ``mask`` when it is on and worth it (enough padding), else None (run padded).

        Never under ``torch.compile``: the packed size depends on the data (``nonzero``), which would break
        the graph at every layer; compiled models run the padded layout, whose shapes the compiler handles.
        """
        if not enabled or mask is None or mask.dim() != 2 or torch.compiler.is_compiling():
            return None
        packing = cls(mask)  # one host sync (nonzero), which also tells how much is padding
        padding = 1.0 - packing.num_tokens / max(1, packing.batch_size * packing.seq_len)
        return packing if padding >= cls.MIN_PADDING else None

    @property
    def num_tokens(self) -> int:
        return self.indices.numel()

    def pack(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (N, ...): the real tokens, row after row."""
        return hidden_states.reshape(self.batch_size * self.seq_len, *hidden_states.shape[2:]).index_select(
            0, self.indices)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, S, ...), zeros at the padded positions."""
        flat = packed.new_zeros(self.batch_size * self.seq_len, *packed.shape[1:]).index_copy(0, self.indices, packed)
        return flat.view(self.batch_size, self.seq_len, *packed.shape[1:])


#: what ``config._attn_implementation`` may say for hm_hf's own attention
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def attention_implementation(config: Any) -> str:
    """The attention ``config`` asks for (read at every forward, so `set_attn_implementation` takes effect);
    "sdpa" without a config or when it does not say."""
    name = getattr(config, "_attn_implementation", None) or "sdpa"
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"hm_hf models support attn_implementation {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
    return name


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
           dropout_p: float = 0.0, implementation: str = "sdpa") -> torch.Tensor:
    """Multi-head attention of (B, H, Lq, d) queries over (B, H, Lk, d) keys / values -> (B, H, Lq, d).

    ``mask``: None, boolean (True = attend) or additive float, broadcastable to (B, H, Lq, Lk).
    ``implementation``: "sdpa" (``F.scaled_dot_product_attention``, fused kernels) or "eager" (the same
    arithmetic spelt out, softmax in float32 as transformers' eager attention; for debugging and for hardware
    or tools without SDPA).
    """
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(query.dtype)
    if implementation == "sdpa":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
    if implementation != "eager":
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
    scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout_p:
        probabilities = F.dropout(probabilities, p=dropout_p)
    return torch.matmul(probabilities, value)


class BertSelfAttention(nn.Module):
    """Multi-head attention through `attend` (SDPA or eager, as ``config._attn_implementation`` says).

    Self-attention by default; pass ``context`` (and build with ``context_size``) for cross-attention, as
    ViLBERT's co-attention does. ``all_head_size`` may differ from ``hidden_size`` (ViLBERT's bi_hidden_size).
    ``config``: the model's config, read at each forward for the attention implementation (None: SDPA).
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        attention_probs_dropout_prob: float = 0.1,
        *,
        context_size: int | None = None,
        all_head_size: int | None = None,
        config: Any = None,
    ):
        super().__init__()
        self.config = config
        all_head_size = all_head_size or hidden_size
        if all_head_size % num_attention_heads != 0:
            raise ValueError(
                f"attention size {all_head_size} is not a multiple of the number of heads {num_attention_heads}"
            )
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = all_head_size // num_attention_heads
        self.all_head_size = all_head_size
        self.query = nn.Linear(hidden_size, all_head_size)
        self.key = nn.Linear(context_size or hidden_size, all_head_size)
        self.value = nn.Linear(context_size or hidden_size, all_head_size)
        self.dropout_prob = attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        packing: TokenPacking | None = None,
    ) -> torch.Tensor:
        """``attention_mask``: None, boolean (True = attend) or additive float, broadcastable to (B, H, Tq, Tk).

        With ``packing``, ``hidden_states`` are packed (N, H): the projections run on the real tokens, the
        attention on the padded layout with ``packing.attention_mask``, and the result comes back packed.
        """
        if packing is not None:
            if context is not None:
                raise ValueError("packed hidden states are for self-attention; pass context=None")
            q, k, v = (packing.unpack(proj(hidden_states)) for proj in (self.query, self.key, self.value))
            attention_mask = packing.attention_mask
        else:
            context = hidden_states if context is None else context
            q, k, v = self.query(hidden_states), self.key(context), self.value(context)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        out = attend(q, k, v, attention_mask, self.dropout_prob if self.training else 0.0,
                     attention_implementation(self.config))
        out = out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.all_head_size)
        return packing.pack(out) if packing is not None else out


class BertSelfOutput(nn.Module):
    """``LayerNorm(dropout(dense(h)) + input_tensor)`` after attention."""

    def __init__(self, hidden_size: int, hidden_dropout_prob: float = 0.1, layer_norm_eps: float = 1e-12,
                 input_size: int | None = None):
        super().__init__()
        self.dense = nn.Linear(input_size or hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(nn.Module):
    """Attention + its output block (``attention.self`` / ``attention.output``)."""

    def __init__(self, hidden_size: int, num_attention_heads: int, hidden_dropout_prob: float = 0.1,
                 attention_probs_dropout_prob: float = 0.1, layer_norm_eps: float = 1e-12,
                 context_size: int | None = None, config: Any = None):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_attention_heads, attention_probs_dropout_prob,
                                      context_size=context_size, config=config)
        self.output = BertSelfOutput(hidden_size, hidden_dropout_prob, layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None, packing: TokenPacking | None = None) -> torch.Tensor:
        return self.output(self.self(hidden_states, attention_mask, context, packing), hidden_states)


class BertIntermediate(nn.Module):
    """Feed-forward up-projection + activation."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "gelu"):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = ACT2FN[hidden_act] if isinstance(hidden_act, str) else hidden_act

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class BertOutput(nn.Module):
    """Feed-forward down-projection: ``LayerNorm(dropout(dense(h)) + input_tensor)`` (transformers' BertOutput).

    The PEFT bottleneck adapter of hm_hf.peft hooks into exactly this block.
    """

    def __init__(self, intermediate_size: int, hidden_size: int, hidden_dropout_prob: float = 0.1,
                 layer_norm_eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(intermediate_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertLayer(GradientCheckpointingLayer):
    """One transformer layer; recomputed in backward when ``model.gradient_checkpointing_enable()`` is on.

    ``config``: the model's config (its ``_attn_implementation``), see :class:`BertSelfAttention`."""

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int, hidden_act: str = "gelu",
                 hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1,
                 layer_norm_eps: float = 1e-12, config: Any = None):
        super().__init__()
        self.attention = BertAttention(hidden_size, num_attention_heads, hidden_dropout_prob,
                                       attention_probs_dropout_prob, layer_norm_eps, config=config)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size, hidden_act)
        self.output = BertOutput(intermediate_size, hidden_size, hidden_dropout_prob, layer_norm_eps)

    @classmethod
    def from_config(cls, config: Any, prefix: str = "") -> BertLayer:
        return cls(**layer_kwargs_from_config(config, prefix), config=config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                packing: TokenPacking | None = None) -> torch.Tensor:
        """(B, S, H) with an SDPA ``attention_mask``, or packed (N, H) real tokens with their ``packing``."""
        attention_output = self.attention(hidden_states, attention_mask, packing=packing)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    """A stack of :class:`BertLayer` (``encoder.layer.N``) that skips the padding (see :class:`TokenPacking`).

    ``skip_padding=False`` runs every position, padded or not; the real tokens' outputs are the same either
    way. (Under ``torch.compile`` every position runs anyway, see :meth:`TokenPacking.for_mask`.)
    """

    def __init__(self, num_hidden_layers: int, skip_padding: bool = True, **layer_kwargs: Any):
        super().__init__()
        self.skip_padding = skip_padding
        self.layer = nn.ModuleList([BertLayer(**layer_kwargs) for _ in range(num_hidden_layers)])

    @classmethod
    def from_config(cls, config: Any, prefix: str = "") -> BertEncoder:
        return cls(getattr(config, prefix + "num_hidden_layers"), skip_padding=getattr(config, "skip_padding", True),
                   config=config, **layer_kwargs_from_config(config, prefix))

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> BaseModelOutput:
        """``attention_mask``: (B, S), 1 for real tokens and 0 for padding (None: nothing padded).

        Padded positions of the returned hidden states are zeros when the padding was skipped.
        """
        packing = TokenPacking.for_mask(attention_mask, self.skip_padding)
        states, all_hidden = run_layers(self.layer, hidden_states, attention_mask, packing, output_hidden_states)
        return BaseModelOutput(last_hidden_state=states, hidden_states=all_hidden)


def run_layers(layers, hidden_states: torch.Tensor, mask: torch.Tensor | None, packing: TokenPacking | None,
               output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Run :class:`BertLayer` s over (B, S, H) ``hidden_states`` with the (B, S) 1/0 ``mask``: packed with
    ``packing`` (from :meth:`TokenPacking.for_mask`) or, when it is None, padded. Returns the last (B, S, H)
    states and, if asked, every layer's input and output (``(hidden_states, after layer 1, ...)``,
    transformers' ``hidden_states`` convention)."""
    all_hidden = (hidden_states,) if output_hidden_states else None
    if packing is None:
        sdpa_mask = make_attention_mask(mask)
        for layer in layers:
            # hidden_states positional: required by re-entrant gradient checkpointing
            hidden_states = layer(hidden_states, sdpa_mask)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
        return hidden_states, all_hidden
    packed = packing.pack(hidden_states)
    for layer in layers:
        packed = layer(packed, None, packing=packing)
        if output_hidden_states:
            all_hidden = all_hidden + (packing.unpack(packed),)
    return packing.unpack(packed), all_hidden


class BertPooler(nn.Module):
    """``tanh(dense(h[:, 0]))``: the first token's state as the sequence summary."""

    def __init__(self, hidden_size: int, output_size: int | None = None):
        super().__init__()
        self.dense = nn.Linear(hidden_size, output_size or hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, LayerNorm, dropout (transformers' BertEmbeddings)."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int = 512,
                 type_vocab_size: int = 2, pad_token_id: int | None = 0, layer_norm_eps: float = 1e-12,
                 hidden_dropout_prob: float = 0.1):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(max_position_embeddings).expand((1, -1)), persistent=False)

    @classmethod
    def from_config(cls, config: Any) -> BertEmbeddings:
        return cls(config.vocab_size, config.hidden_size, config.max_position_embeddings, config.type_vocab_size,
                   getattr(config, "pad_token_id", 0), config.layer_norm_eps, config.hidden_dropout_prob)

    def embed_text(self, input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The sum word + position + token type, before LayerNorm (VisualBERT adds visual tokens to it)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.word_embeddings(input_ids)
        seq_length = inputs_embeds.shape[1]
        if seq_length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {seq_length} tokens is longer than max_position_embeddings="
                f"{self.position_embeddings.num_embeddings}; truncate it in the tokenizer (max_length)"
            )
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)

    def forward(self, input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.dropout(self.LayerNorm(self.embed_text(input_ids, token_type_ids, position_ids, inputs_embeds)))
