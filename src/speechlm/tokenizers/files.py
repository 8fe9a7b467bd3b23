"""Wav files <-> code files: ``speechlm codec encode`` / ``speechlm codec decode``.

A code file holds one utterance: ``codes [K, T]`` int64 and, for designs with a global speaker
vector, ``speaker [Ds]``. ``.safetensors`` keeps both plus the tokenizer name and frame rate as
metadata; ``.npy`` holds the codes alone, so it is refused for designs that need a speaker vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from speechlm.audio import load_audio, save_audio
from speechlm.tokenizers.base import SpeechTokenizer

CODE_SUFFIXES = (".safetensors", ".npy")


def _check_suffix(path: Path) -> None:
    if path.suffix not in CODE_SUFFIXES:
        raise ValueError(f"{path}: code files must end in {' or '.join(CODE_SUFFIXES)}")


def encode_file(tok: SpeechTokenizer, wav_path: Path, out_path: Path) -> tuple[int, int]:
    """Encode one audio file (resampled to the tokenizer's rate) -> code file; returns (K, T)."""
    _check_suffix(out_path)
    if out_path.suffix == ".npy" and tok.speaker_dim:
        raise ValueError(f"{out_path}: {tok.describe()} also emits a speaker vector; save to .safetensors")
    wav = torch.from_numpy(load_audio(wav_path, sample_rate=tok.sample_rate).wav)[None]
    enc = tok.encode(wav, torch.tensor([wav.shape[1]]))
    codes = enc.codes[0, :, : int(enc.lengths[0])].cpu().contiguous()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".tmp" + out_path.suffix)
    if out_path.suffix == ".npy":
        np.save(tmp, codes.numpy())
    else:
        tensors = {"codes": codes}
        if enc.speaker is not None:
            tensors["speaker"] = enc.speaker[0].float().cpu().contiguous()
        name = tok.tokenizer_config.name if tok.tokenizer_config is not None else type(tok).__name__
        save_file(tensors, str(tmp), metadata={"tokenizer": name, "frame_rate": str(tok.frame_rate)})
    tmp.replace(out_path)
    return int(codes.shape[0]), int(codes.shape[1])


def read_codes(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """-> (``codes [K, T]`` int64, ``speaker [Ds]`` or None)."""
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"code file not found: {path}")
    if path.suffix == ".npy":
        codes = np.load(path)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{path}: expected integer codes [K, T], got {codes.dtype} {codes.shape}")
        return torch.from_numpy(codes.astype(np.int64)), None
    tensors = load_file(str(path))
    if "codes" not in tensors:
        raise ValueError(f"{path}: no 'codes' tensor (has {sorted(tensors)})")
    return tensors["codes"].long(), tensors.get("speaker")


def decode_file(tok: SpeechTokenizer, codes_path: Path, wav_path: Path) -> float:
    """Decode one code file to a 16-bit wav; returns the audio duration in seconds."""
    codes, speaker = read_codes(codes_path)
    out = tok.decode(codes[None], torch.tensor([codes.shape[1]]), None if speaker is None else speaker[None])
    wav = out.wav[0, : int(out.lengths[0])].float().cpu().numpy()
    save_audio(wav_path, wav, tok.sample_rate)
    return len(wav) / tok.sample_rate
