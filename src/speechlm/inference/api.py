"""Load a trained SLM checkpoint and speak with it: ``Synthesizer.tts`` and ``Synthesizer.ask``.

A checkpoint folder (``speechlm train``) holds the SLM weights, its resolved config, the text
tokenizer and the speech tokenizer's fingerprint; the config says which speech tokenizer the codes
came from, which is rebuilt and checked against that fingerprint, so a model never talks through
a codec it was not trained on. ``speakers.safetensors`` (:mod:`speechlm.inference.speakers`), when
present, names the corpus voices.

Prompts come from the training templates (``data.tasks.TaskFormatter.prompt``), so generation sees
exactly the context format the model learnt:

- ``tts``: ``[Human]: Read this sentence: {text}. [You should speak like: <spk>.] [Assistant]: The speech is: [ua]``
- ``ask``: ``{system} [Human]: Respond to this text question, ... Question: {q} [Assistant]: [ta]``
  and the model writes the text answer, ``[ua]``, then the speech (study Appendix G.3).

**Streams the LM does not model** (e.g. the acoustic-detail streams of a decoupled codec when the
layout keeps prosody + content, study Appendix E.2): a codec that can decode a subset of its
streams (``decode_streams``, as the in-house decoupled codec does: absent groups contribute nothing
and the timbre vector stands in for the acoustic detail, which that codec is trained for with
acoustic dropout) gets just the modelled streams. Any other codec gets the missing streams filled
with code 0 for every frame before ``tokenizer.decode``: a constant, content-free choice that never
leaks information the model did not generate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speechlm.audio import load_audio
from speechlm.data.codes import cache_dir_for, tokenizer_fingerprint
from speechlm.data.tasks import SpeakerPiece, SpeechPiece, Task, TaskFormatter, TextPiece
from speechlm.inference.generate import GenerationConfig, GenerationOutput, Generator, PromptBatch, PromptItem
from speechlm.inference.speakers import SpeakerTable, table_for_checkpoint
from speechlm.layout.vocab import SPEAKER_PLACEHOLDER
from speechlm.runtime import resolve_device
from speechlm.tokenizers.base import DecodedAudio, SpeechTokenizer
from speechlm.train.build import build_speech_tokenizer
from speechlm.train.checkpoint import LoadedSLM, load_slm


@dataclass(frozen=True)
class Voice:
    """Who speaks: a table name or a reference file (``name``), and its timbre vector."""

    name: str  # "" when neither the LM nor the codec uses a speaker vector
    vector: torch.Tensor | None  # [Ds]


@dataclass(frozen=True)
class SpeechResult:
    text: str  # tts: the input text; ask: the model's text answer
    wav: np.ndarray  # [N] float32 at sample_rate; empty when the model produced no frame
    sample_rate: int
    speaker: str
    frames: int
    finished: bool  # stopped at END with at least one frame (False: cut at the length limit, or empty)

    @property
    def audio_seconds(self) -> float:
        return len(self.wav) / self.sample_rate


def decode_modelled(
    codec: SpeechTokenizer, codes: torch.Tensor, streams: Sequence[int], lengths: torch.Tensor, speaker: torch.Tensor | None
) -> DecodedAudio:
    """Audio from the LM's codes ``[B,K,T]`` of tokenizer streams ``streams``, lengths ``[B]`` frames
    (see the module docstring for the streams the LM does not model)."""
    if len(streams) < codec.num_streams and hasattr(codec, "decode_streams"):
        return codec.decode_streams(codes, tuple(streams), lengths, speaker)
    return codec.decode(fill_unmodelled(codes, streams, codec.num_streams), lengths, speaker)


def fill_unmodelled(codes: torch.Tensor, streams: Sequence[int], num_streams: int, fill: int = 0) -> torch.Tensor:
    """Modelled-stream codes ``[B,K,T]`` (layout order) -> tokenizer codes ``[B,K_all,T]``, the other
    streams held at ``fill`` (see the module docstring)."""
    B, K, T = codes.shape
    if K != len(streams):
        raise ValueError(f"codes have {K} streams but the layout models {len(streams)}: {tuple(streams)}")
    full = codes.new_full((B, num_streams, T), fill)
    full[:, list(streams)] = codes
    return full


class Synthesizer:
    """A trained SLM + its text tokenizer, layout, speech tokenizer and named voices."""

    def __init__(
        self,
        loaded: LoadedSLM,
        codec: SpeechTokenizer,
        speakers: SpeakerTable,
        generation: GenerationConfig | None = None,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loaded, self.codec, self.speakers = loaded, codec, speakers
        self.model, self.layout, self.text = loaded.model, loaded.layout, loaded.text_tokenizer
        self.formatter = TaskFormatter(loaded.config.data.task)
        self.generation = generation or GenerationConfig()
        self.batch_size = batch_size
        self.generator = Generator(self.model, self.layout, self.text, self.generation, frame_rate=codec.frame_rate)
        lm_dim = self.model.cfg.speaker_dim
        if lm_dim and codec.speaker_dim and lm_dim != codec.speaker_dim:
            raise ValueError(f"the model expects {lm_dim}-d speaker vectors, the tokenizer gives {codec.speaker_dim}-d")

    @classmethod
    def load(
        cls, path: str | Path, *, device: str = "auto", generation: GenerationConfig | None = None, batch_size: int = 8
    ) -> Synthesizer:
        """Load a checkpoint folder (or a run folder: its newest checkpoint) for inference."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path}")
        dev = resolve_device(device)
        loaded = load_slm(path, device=dev)
        codec = build_speech_tokenizer(loaded.config.tokenizer, dev)
        if tokenizer_fingerprint(codec) != loaded.meta.tokenizer_fingerprint:
            raise ValueError(
                f"the speech tokenizer {loaded.config.tokenizer} is not the one {loaded.path} was trained on "
                f"(fingerprint {tokenizer_fingerprint(codec)[:12]} != {loaded.meta.tokenizer_fingerprint[:12]})"
            )
        speakers = SpeakerTable.load(loaded.path)
        if codec.speaker_dim and not len(speakers):
            data = loaded.config.data
            cache = cache_dir_for(data.cache_dir, codec, loaded.meta.tokenizer_fingerprint)
            speakers = table_for_checkpoint(loaded.path, data.corpus, data.train_split, cache)
        return cls(loaded, codec, speakers, generation, batch_size)

    @property
    def uses_speaker(self) -> bool:
        """Whether a timbre vector is needed: by the LM's prompt (§2.3) or by the codec's decoder."""
        return self.model.cfg.speaker_dim > 0 or self.codec.speaker_dim > 0

    # -- voices -----------------------------------------------------------------------------------
    def voice(self, speaker: str | None = None, ref: str | Path | None = None) -> Voice:
        """The voice of ``speaker`` (a table name), of the recording ``ref``, or the default one."""
        if speaker is not None and ref is not None:
            raise ValueError("give a speaker name or a reference recording, not both")
        if not self.uses_speaker:
            if speaker is not None or ref is not None:
                raise ValueError("this model has no speaker control (neither the SLM nor its codec uses a speaker vector)")
            return Voice("", None)
        if ref is not None:
            return Voice(str(ref), self.reference_vector(ref))
        name = speaker if speaker is not None else self.speakers.default()
        return Voice(name, self.speakers.get(name))

    def reference_vector(self, ref: str | Path) -> torch.Tensor:
        """Timbre vector ``[Ds]`` of a recording, from the speech tokenizer's timbre encoder."""
        audio = load_audio(ref, sample_rate=self.codec.sample_rate)  # unreadable files fail first, by name
        if self.codec.speaker_dim == 0:
            raise ValueError(f"tokenizer {self.codec.describe()} has no timbre encoder, so it cannot read a reference voice")
        wav = torch.from_numpy(audio.wav)[None].to(self.generator.device)
        with torch.inference_mode():
            out = self.codec.encode(wav, torch.tensor([wav.shape[1]], device=wav.device))
        assert out.speaker is not None
        return out.speaker[0].float().cpu()

    # -- tasks ------------------------------------------------------------------------------------
    def tts(self, texts: Sequence[str], voice: Voice | None = None) -> list[SpeechResult]:
        """Read each text aloud in ``voice`` (default: :meth:`voice` ``()``)."""
        voice = voice or self.voice()
        items = [self.prompt("tts", text, voice) for text in texts]
        return self._run(items, voice, answers=list(texts))

    def ask(self, questions: Sequence[str], voice: Voice | None = None) -> list[SpeechResult]:
        """Answer each question in text, then speak the answer (role-playing QA, study §3)."""
        voice = voice or self.voice()
        items = [self.prompt("role_qa", question, voice) for question in questions]
        return self._run(items, voice, answers=None)

    def prompt(self, task: Task, text: str, voice: Voice) -> PromptItem:
        """The prompt of one tts text or role_qa question, as ids (ValueError for empty/unencodable text)."""
        if not text or not text.strip():
            raise ValueError(f"empty {'text' if task == 'tts' else 'question'}: {text!r}")
        pieces = self.formatter.prompt(task, text=text) if task == "tts" else self.formatter.prompt(task, question=text)
        ids: list[int] = []
        position = None
        for piece in pieces:
            if isinstance(piece, TextPiece):
                ids += self.text.encode(piece.text)
            elif isinstance(piece, SpeakerPiece):
                position = len(ids)
                ids.append(self.text.special_id(SPEAKER_PLACEHOLDER))
            else:
                assert not isinstance(piece, SpeechPiece), f"{task} prompts hold no input speech"
        if (position is None) != (self.model.cfg.speaker_dim == 0):
            raise AssertionError("the task template and the model disagree on speaker awareness")
        qa = task == "role_qa"
        # QA: a cap for the answer's speech, tightened to the written answer by the Generator.
        chars = self.generation.max_text_tokens * 8 if qa else len(text.strip())
        return PromptItem(
            ids=tuple(ids),
            max_frames=self.generation.max_frames(chars, self.codec.frame_rate),
            text_first=qa,
            speaker_position=position,
            speaker=voice.vector if position is not None else None,
        )

    def _run(self, items: list[PromptItem], voice: Voice, answers: list[str] | None) -> list[SpeechResult]:
        results: list[SpeechResult] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            out = self.generator.generate(PromptBatch.from_items(chunk, self.text.pad_id))
            texts = answers[start : start + len(chunk)] if answers is not None else out.text
            results += self._render(out, voice, texts)
        return results

    @torch.inference_mode()
    def _render(self, out: GenerationOutput, voice: Voice, texts: Sequence[str]) -> list[SpeechResult]:
        """Decode the generated codes to audio; an item with no frame gets empty audio, unfinished."""
        sr = self.codec.sample_rate
        wavs: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(texts)
        keep = (out.lengths > 0).nonzero().squeeze(-1).tolist()
        if keep:
            codes = out.codes[keep]
            speaker = None
            if self.codec.speaker_dim:
                assert voice.vector is not None
                speaker = voice.vector[None].expand(len(keep), -1).to(codes.device)
            decoded = decode_modelled(self.codec, codes, self.layout.cfg.streams, out.lengths[keep].to(codes.device), speaker)
            for j, b in enumerate(keep):
                wavs[b] = decoded.wav[j, : int(decoded.lengths[j])].float().cpu().numpy()
        return [
            SpeechResult(
                text=texts[b],
                wav=wavs[b],
                sample_rate=sr,
                speaker=voice.name,
                frames=int(out.lengths[b]),
                finished=bool(out.finished[b]) and int(out.lengths[b]) > 0,
            )
            for b in range(len(texts))
        ]
