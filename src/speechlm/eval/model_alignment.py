"""Cross-modal alignment of a trained SLM: ``speechlm align CKPT --data DIR --json OUT [--plot OUT.png]``.

Study §4.6 (Table 4) and Appendix F.1 (Figure 5): run the model teacher-forced over TTS sequences
of a corpus split (prompt text, then the ground-truth speech groups), keep every layer's hidden
states (``output_hidden_states``: index 0 = the input embeddings, L = the last layer), split them
into text and speech positions, and hand them to :mod:`speechlm.eval.alignment` for TTSim / SSSim /
STSim, the distances and the Riemannian distance, plus UMAP panels of the chosen layers.

Text positions are the real non-speech positions minus the speaker placeholder, whose input is the
projected timbre vector rather than a text token (§2.3). Under MTP one speech position holds a fused
group of g tokens (Eq. 4), which is exactly the state the study compares across g.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from speechlm.data.codes import CodeCache, ensure_code_cache
from speechlm.data.dataset import SequenceEncoder, collate, encode_split
from speechlm.data.manifest import Corpus
from speechlm.eval.alignment import (
    ModalityStates,
    alignment_metrics,
    collect_states,
    default_layers,
    plot_projections,
    umap_projection,
)
from speechlm.model.batch import SLMBatch
from speechlm.runtime import resolve_device
from speechlm.train.build import build_speech_tokenizer
from speechlm.train.checkpoint import LoadedSLM, load_slm


def eval_code_cache(loaded: LoadedSLM, corpus: Corpus, split: str, cache_root: Path | None = None) -> CodeCache:
    """Codes of ``split`` (and train, for speaker means) from the checkpoint's own speech tokenizer, cached
    under ``cache_root`` (default: the run's ``data.cache_dir``/eval, apart from the training cache so
    neither evicts the other); checked against the tokenizer the checkpoint was trained on."""
    cfg = loaded.config
    splits = (split, "train") if cfg.data.speaker_vector == "speaker_mean" and split != "train" else (split,)
    codec = build_speech_tokenizer(cfg.tokenizer, next(loaded.model.parameters()).device)
    root = cache_root if cache_root is not None else Path(cfg.data.cache_dir) / "eval"
    cache = ensure_code_cache(corpus, codec, root, splits=splits, show_progress=False)
    if cache.fingerprint != loaded.meta.tokenizer_fingerprint:
        raise ValueError(f"the speech tokenizer of {loaded.path} does not match the codes it was trained on")
    return cache


def teacher_forced_batches(
    loaded: LoadedSLM, corpus: Corpus, split: str, *, limit: int = 64, batch_size: int = 8, cache_root: Path | None = None
) -> Iterator[SLMBatch]:
    """TTS sequences of ``split`` (first ``limit`` rows; 0 = all) with their real speech codes, batched
    (codes: :func:`eval_code_cache`)."""
    data = replace(loaded.config.data, task=replace(loaded.config.data.task, tasks=("tts",)), max_positions=1 << 30)
    cache = eval_code_cache(loaded, corpus, split, cache_root)
    wanted = corpus.tts(split)[: limit or None]
    if not wanted:
        raise ValueError(f"corpus {corpus.root} has no TTS rows in split {split!r}")
    keep = {f"{row.id}/tts" for row in wanted}
    encoder = SequenceEncoder(loaded.text_tokenizer, loaded.layout)
    examples = [e for e in encode_split(corpus, split, data, encoder, cache)[0] if e.id in keep]
    pad = dict(text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    for start in range(0, len(examples), batch_size):
        yield collate(examples[start : start + batch_size], **pad)


@torch.inference_mode()
def model_states(loaded: LoadedSLM, batches: Iterator[SLMBatch], layers: Sequence[int]) -> dict[int, ModalityStates]:
    """Text and speech hidden states of ``layers`` over all batches (float32, CPU)."""
    model = loaded.model
    device = next(model.parameters()).device
    out: dict[int, ModalityStates] = {}
    for batch in batches:
        b = batch.to(device)
        x = model.embed(b.input_ids, b.speech_ids, b.is_speech, b.speaker, b.speaker_mask)
        hidden = model.backbone(x, attention_mask=b.attention_mask, output_hidden_states=True).hidden_states
        assert hidden is not None
        real = b.attention_mask.bool() & ~b.speaker_mask  # the placeholder holds a timbre vector, not text
        states = collect_states(hidden, b.is_speech, real.long(), layers)
        out = states if not out else {layer: out[layer].cat(states[layer]) for layer in layers}
    if not out:
        raise ValueError("no sequences to analyse")
    return out


def resolve_layers(layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """Figure 5's (embeddings, middle, last) by default; negative indices count from the last layer."""
    chosen = tuple(layers) if layers else default_layers(num_layers)
    resolved = tuple(layer if layer >= 0 else num_layers + 1 + layer for layer in chosen)
    bad = [layer for layer, r in zip(chosen, resolved) if not 0 <= r <= num_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} do not exist; the backbone has layers 0..{num_layers} (0 = embeddings)")
    return tuple(dict.fromkeys(resolved))


def align_checkpoint(
    ckpt: str | Path,
    corpus_dir: str | Path,
    *,
    split: str = "test",
    layers: Sequence[int] | None = None,
    limit: int = 64,
    plot: str | Path | None = None,
    device: str = "auto",
    max_points: int = 4096,
) -> dict[str, Any]:
    """Table 4's metrics per layer (+ a Figure 5 UMAP PNG when ``plot`` is given) for one checkpoint."""
    loaded = load_slm(ckpt, device=resolve_device(device))
    num_layers = int(loaded.model.backbone.lm.config.num_hidden_layers)
    chosen = resolve_layers(layers, num_layers)
    batches = teacher_forced_batches(loaded, Corpus.open(corpus_dir), split, limit=limit)
    states = model_states(loaded, batches, chosen)
    report: dict[str, Any] = {
        "checkpoint": str(loaded.path),
        "group_size": loaded.layout.group_size,
        "split": split,
        "num_layers": num_layers,
        "layers": {str(layer): alignment_metrics(states[layer], max_points=max_points).to_dict() for layer in chosen},
    }
    if plot is not None:
        projections = [umap_projection(states[layer], layer) for layer in chosen]
        report["plot"] = str(plot_projections(projections, plot, title=f"g={loaded.layout.group_size}"))
        report["centroid_gap"] = {str(p.layer): p.centroid_distance for p in projections}
    return report


def format_alignment(report: dict[str, Any]) -> str:
    """Table 4 layout: one row per layer."""
    cols = ("tt_sim", "ss_sim", "st_sim", "tt_dist", "ss_dist", "st_dist", "riemannian")
    lines = ["| layer | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for layer, m in report["layers"].items():
        lines.append(f"| {layer} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)
