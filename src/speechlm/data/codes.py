"""Tokenise a corpus once and cache its speech codes (+ speaker vectors) for SLM training.

Training reads cached codes and never re-encodes audio per step. A cache lives in its own folder
named after the tokenizer's fingerprint — a hash of its resolved config *and* its weights — so a
different (or retrained) tokenizer can never pick up a stale cache::

    CACHE_DIR/<tokenizer name>-<fingerprint[:12]>/
        index.json           # fingerprint, tokenizer facts, manifest hash, utterance ids per split
        train.safetensors    # codes [K, sum T] int32, offsets [N+1] int64, speaker [N, Ds] float32
        val.safetensors ...

Rows of one split are stored back to back: utterance ``i`` is ``codes[:, offsets[i]:offsets[i+1]]``.
A cache whose manifests changed since it was written (different ``manifest_sha``) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from speechlm import config as cfglib
from speechlm.audio import load_audio
from speechlm.data.manifest import SPLITS, Corpus, Utterance
from speechlm.tokenizers.base import SpeechTokenizer, pad_batch

INDEX_FILE = "index.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class UttCodes:
    codes: torch.Tensor  # [K, T] int64
    speaker: torch.Tensor | None  # [Ds] float32, or None when the tokenizer has no speaker vector

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])


@dataclass(frozen=True)
class CodeCache:
    """An opened cache: every split's codes in memory, looked up by utterance id."""

    root: Path
    fingerprint: str
    tokenizer: dict  # name, coupling, frame_rate, sample_rate, codebook_sizes, stream_names, speaker_dim
    items: dict[str, UttCodes]
    split_ids: dict[str, tuple[str, ...]]

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(self.tokenizer["codebook_sizes"])

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(self.tokenizer["stream_names"])

    @property
    def frame_rate(self) -> float:
        return float(self.tokenizer["frame_rate"])

    @property
    def speaker_dim(self) -> int:
        return int(self.tokenizer["speaker_dim"])

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self.items

    def get(self, utt_id: str) -> UttCodes:
        if utt_id not in self.items:
            raise ValueError(
                f"utterance {utt_id!r} has no cached codes in {self.root}; the manifest and the cache disagree "
                "(rebuild the cache: delete the folder or change data.cache_dir)"
            )
        return self.items[utt_id]


def tokenizer_fingerprint(tok: SpeechTokenizer) -> str:
    """SHA-256 over the tokenizer's resolved config, stream layout and every weight/buffer byte.

    Config fields marked training-only (``config.TRAINING_ONLY``) are left out: they cannot change
    the codes of given weights. (Older training weights such as ``unit_weight`` predate the marker
    and stay in, so the fingerprints of shipped checkpoints and the caches keyed by them hold.)
    """
    h = hashlib.sha256()
    config = (
        cfglib.to_dict(tok.tokenizer_config, inference_only=True)
        if tok.tokenizer_config is not None
        else type(tok).__qualname__
    )
    h.update(json.dumps({"config": config, "facts": tokenizer_facts(tok)}, sort_keys=True).encode())
    for name, tensor in sorted(tok.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def manifest_sha(corpus: Corpus) -> str:
    """Hash of the manifests a cache was built from; changes when the corpus is re-synthesised."""
    h = hashlib.sha256()
    for name in ("tts.jsonl", "qa.jsonl"):
        path = corpus.root / name
        if path.is_file():
            h.update(name.encode() + path.read_bytes())
    return h.hexdigest()


def cache_dir_for(cache_root: str | Path, tok: SpeechTokenizer, fingerprint: str) -> Path:
    name = tok.tokenizer_config.name if tok.tokenizer_config is not None else type(tok).__name__
    return Path(cache_root) / f"{name}-{fingerprint[:12]}"


def ensure_code_cache(
    corpus: Corpus,
    tok: SpeechTokenizer,
    cache_root: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    max_batch_seconds: float = 60.0,
    show_progress: bool = True,
) -> CodeCache:
    """Open the cache for (corpus, tokenizer), building it first when it is missing or stale."""
    fingerprint = tokenizer_fingerprint(tok)
    root = cache_dir_for(cache_root, tok, fingerprint)
    sha = manifest_sha(corpus)
    if (root / INDEX_FILE).is_file():
        index = _read_index(root)
        if index.get("manifest_sha") == sha and set(splits) <= set(index["splits"]):
            return open_code_cache(root, fingerprint=fingerprint)
    return build_code_cache(
        corpus, tok, root, splits=splits, max_batch_seconds=max_batch_seconds, show_progress=show_progress
    )


def build_code_cache(
    corpus: Corpus,
    tok: SpeechTokenizer,
    root: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    max_batch_seconds: float = 60.0,
    show_progress: bool = True,
) -> CodeCache:
    """Encode every TTS and QA row of ``splits`` and write the cache atomically (temp folder + rename)."""
    root = Path(root)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fingerprint = tokenizer_fingerprint(tok)
    split_ids: dict[str, list[str]] = {}
    for split in splits:
        rows = _unique_rows([*corpus.tts(split), *corpus.qa(split)])
        if not rows:
            split_ids[split] = []
            continue
        codes, speaker = _encode_rows(corpus, tok, rows, max_batch_seconds, show_progress, split)
        ordered_speaker = None if speaker is None else [speaker[r.id] for r in rows]
        _write_split(tmp / f"{split}.safetensors", [codes[r.id] for r in rows], ordered_speaker)
        split_ids[split] = [r.id for r in rows]
    index = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "tokenizer": tokenizer_facts(tok),
        "corpus": str(corpus.root.resolve()),
        "manifest_sha": manifest_sha(corpus),
        "splits": split_ids,
    }
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
    if root.exists():
        shutil.rmtree(root)
    tmp.replace(root)
    return open_code_cache(root, fingerprint=fingerprint)


def open_code_cache(root: str | Path, *, fingerprint: str | None = None) -> CodeCache:
    """Load a cache; with ``fingerprint`` given, refuse a cache written by any other tokenizer."""
    root = Path(root)
    index = _read_index(root)
    if fingerprint is not None and index["fingerprint"] != fingerprint:
        raise ValueError(
            f"code cache {root} was written by tokenizer {index['fingerprint'][:12]}, "
            f"not by the configured one ({fingerprint[:12]}); refusing stale codes"
        )
    items: dict[str, UttCodes] = {}
    for split, ids in index["splits"].items():
        if ids:
            items.update(_read_split(root / f"{split}.safetensors", ids))
    return CodeCache(
        root=root,
        fingerprint=index["fingerprint"],
        tokenizer=index["tokenizer"],
        items=items,
        split_ids={s: tuple(ids) for s, ids in index["splits"].items()},
    )


# -- internals ------------------------------------------------------------------------------------


def tokenizer_facts(tok: SpeechTokenizer) -> dict:
    """What a cache and a checkpoint record about the tokenizer (JSON-ready)."""
    return {
        "name": tok.tokenizer_config.name if tok.tokenizer_config is not None else type(tok).__name__,
        "coupling": tok.coupling,
        "sample_rate": int(tok.sample_rate),
        "frame_rate": float(tok.frame_rate),
        "codebook_sizes": [s.codebook_size for s in tok.streams],
        "stream_names": [s.name for s in tok.streams],
        "stream_kinds": [s.kind for s in tok.streams],
        "speaker_dim": int(tok.speaker_dim),
    }


_tokenizer_facts = tokenizer_facts  # earlier private name, still imported by tests/inference/conftest.py


def _read_index(root: Path) -> dict:
    path = root / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a code cache (no {INDEX_FILE}): {root}")
    index = json.loads(path.read_text())
    if index.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: cache version {index.get('version')} is not {CACHE_VERSION}; rebuild it")
    return index


def _unique_rows(rows: list[Utterance]) -> list[Utterance]:
    seen: dict[str, Utterance] = {}
    for row in rows:
        if row.id in seen and seen[row.id].audio != row.audio:
            raise ValueError(f"utterance id {row.id!r} names two different audio files; ids must be unique")
        seen.setdefault(row.id, row)
    return list(seen.values())


def _batches(rows: list[Utterance], max_batch_seconds: float) -> Iterator[list[Utterance]]:
    """Duration-sorted batches of at most ``max_batch_seconds`` padded audio (little padding waste)."""
    batch: list[Utterance] = []
    for row in sorted(rows, key=lambda r: (r.duration, r.id)):
        if batch and row.duration * (len(batch) + 1) > max_batch_seconds:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


@torch.inference_mode()
def _encode_rows(
    corpus: Corpus,
    tok: SpeechTokenizer,
    rows: list[Utterance],
    max_batch_seconds: float,
    show_progress: bool,
    split: str,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    device = next(iter(tok.parameters()), torch.empty(0)).device
    codes: dict[str, torch.Tensor] = {}
    speaker: dict[str, torch.Tensor] | None = {} if tok.speaker_dim > 0 else None
    bar = tqdm(total=len(rows), desc=f"encode {split}", unit="utt", disable=not show_progress)
    for batch in _batches(rows, max_batch_seconds):
        wavs = [load_audio(corpus.audio_path(r), sample_rate=tok.sample_rate).wav for r in batch]
        wav, lengths = pad_batch(wavs)
        out = tok.encode(wav.to(device), lengths.to(device))
        for i, row in enumerate(batch):
            codes[row.id] = out.codes[i, :, : int(out.lengths[i])].to("cpu", torch.int32)
            if speaker is not None:
                if out.speaker is None:
                    raise ValueError(f"tokenizer has speaker_dim {tok.speaker_dim} but returned no speaker vector")
                speaker[row.id] = out.speaker[i].to("cpu", torch.float32)
        bar.update(len(batch))
    bar.close()
    return codes, speaker


def _write_split(path: Path, codes: list[torch.Tensor], speaker: list[torch.Tensor] | None) -> None:
    lengths = torch.tensor([c.shape[1] for c in codes], dtype=torch.int64)
    tensors = {
        "codes": torch.cat(codes, dim=1).contiguous(),  # [K, sum T]
        "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),  # [N+1]
    }
    if speaker is not None:
        tensors["speaker"] = torch.stack(speaker).contiguous()  # [N, Ds]
    save_file(tensors, str(path))


def _read_split(path: Path, ids: list[str]) -> dict[str, UttCodes]:
    if not path.is_file():
        raise FileNotFoundError(f"code cache file missing: {path}")
    t = load_file(str(path))
    offsets = t["offsets"].tolist()
    if len(offsets) != len(ids) + 1:
        raise ValueError(f"{path}: {len(offsets) - 1} rows but the index lists {len(ids)} ids; rebuild the cache")
    codes = t["codes"].long()
    speaker = t.get("speaker")
    return {
        utt_id: UttCodes(
            codes=codes[:, offsets[i] : offsets[i + 1]],
            speaker=None if speaker is None else speaker[i],
        )
        for i, utt_id in enumerate(ids)
    }


def speaker_means(cache: CodeCache, corpus: Corpus, split: str = "train") -> dict[str, torch.Tensor]:
    """Mean speaker vector per speaker over ``split`` — a steadier role timbre than one utterance's."""
    sums: dict[str, list[torch.Tensor]] = {}
    for row in [*corpus.tts(split), *corpus.qa(split)]:
        item = cache.items.get(row.id)
        if item is not None and item.speaker is not None:
            sums.setdefault(row.speaker, []).append(item.speaker)
    return {name: torch.stack(vecs).mean(0) for name, vecs in sums.items()}

