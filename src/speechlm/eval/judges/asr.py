"""ASR judges: transcribe 16 kHz speech so WER can be computed (study Appendix D).

- :class:`PocketsphinxJudge` — the offline default: pocketsphinx 5 with its bundled en-us
  acoustic model MAP-adapted to the demo corpus's train voices (``checkpoints/asr_judge/demo``,
  see ``adapt.py``; ``acoustic_model: bundled`` for the model as shipped), decoding either with
  a **domain LM** built from a corpus's
  ``grammar/lm_text.txt`` (closed vocabulary from ``grammar/domain.dic``) or with the bundled
  **general-English** 3-gram LM and CMU dictionary.
- :class:`WhisperJudge` — the study's judge (Whisper-large-v3) or any Whisper checkpoint from a
  local directory, through transformers (WhisperForConditionalGeneration + its numpy features).

Why an n-gram LM rather than the corpus's JSGF grammar: a grammar forces every input into a
valid sentence, so time-reversed or shuffled audio still "matches" many reference words and a
broken TTS system would look fine. A back-off n-gram keeps the closed vocabulary and the
domain's word statistics but lets scrambled audio fall apart into insertions and substitutions.
The grammar still helps where the audio supports it: the n-gram decoder's N-best list is
searched for a sentence of the corpus grammar, and that sentence replaces the n-gram's best
hypothesis only when its score is within a small margin of it (a likelihood-ratio test between
the grammar-constrained and the unconstrained hypothesis; see :class:`PocketsphinxJudge`).
The defaults below are the ones measured in docs/RESULTS.md ("Judges"), where both checks —
low WER on clean ground truth and WER >= 80% on scrambled copies — are reported side by side.
"""

from __future__ import annotations

import abc
import itertools
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from speechlm.audio import rms_db
from speechlm.eval.judges.adapt import assemble_acoustic_model
from speechlm.eval.judges.base import JUDGE_SAMPLE_RATE, prepare_wav, require_dir, to_pcm16

if TYPE_CHECKING:
    from pocketsphinx import Decoder, FsgModel

MIN_SECONDS = 0.05  # below one 50 ms window no recogniser produces anything meaningful
# The shipped MAP-adapted model (a repository-relative folder, see adapt.py): clean test WER on
# the flite/festival voices 2.3% vs 5.1% with the bundled model (docs/RESULTS.md, "Judges").
DEFAULT_ACOUSTIC_MODEL = "checkpoints/asr_judge/demo"
SILENCE_DBFS = -70.0  # quieter clips hold no speech; pocketsphinx would still emit a word ("the")
_SENTENCE_MARKERS = frozenset({"<s>", "</s>"})  # N-best entries carry them; the grammar has no such words


class AsrJudge(abc.ABC):
    """``transcribe(wav [N] float32 @ 16 kHz) -> str``; compare with references via ``metrics.wer``."""

    name: str
    sample_rate: int = JUDGE_SAMPLE_RATE

    @abc.abstractmethod
    def transcribe(self, wav: np.ndarray) -> str:
        """Lower-case words of the best hypothesis ("" when nothing was recognised)."""

    @classmethod
    def default(cls, corpus_dir: str | Path | None = None) -> AsrJudge:
        """Pocketsphinx with the corpus's domain LM, or general English when ``corpus_dir`` is None."""
        cfg = PocketsphinxConfig(lm="domain" if corpus_dir is not None else "general")
        return PocketsphinxJudge(cfg, corpus_dir)

    @classmethod
    def whisper(cls, path: str | Path, device: str = "cpu") -> AsrJudge:
        return WhisperJudge(path, device=device)


@dataclass(frozen=True)
class PocketsphinxConfig:
    """Decoder settings of the pocketsphinx judge (YAML maps 1:1, see configs/eval/judges.yaml)."""

    lm: Literal["domain", "general"] = "domain"
    # A bigram with a large absolute discount: the corpus sentences are uniform draws from the
    # grammar, so sparse trigram counts mostly add noise (they preferred "that car" over "the car");
    # on held-out val sentences 3-gram/Ney's D: 7.5% WER, 2-gram/D=0.9: 4.7% (docs/RESULTS.md).
    order: int = 2  # n-gram order of the domain LM
    smoothing: Literal["absolute", "witten_bell"] = "absolute"
    discount: float | None = 0.9  # absolute discount; None = Ney's per-order estimate
    lw: float = 6.5  # language weight of the first pass (pocketsphinx default)
    wip: float = 0.65  # word insertion penalty (pocketsphinx default)
    # Frequency-warp factors tried per clip; the hypothesis with the best score wins (see below).
    warps: tuple[float, ...] = (0.8, 1.0, 1.3)
    # Grammar test (domain LM only): how many N-best entries are searched for a sentence of the
    # corpus grammar (0 = off), and how far below the best entry, in pocketsphinx log-score units
    # (log base 1.0001) per 10-ms frame, that sentence may score and still be accepted.
    grammar_nbest: int = 50
    grammar_margin: float = 1.0
    # "bundled" (pocketsphinx's en-us model) or a folder made by `speechlm judge adapt`: the
    # bundled model adapted (MAP/MLLR) to the corpus voices' train clips (see adapt.py).
    acoustic_model: str = DEFAULT_ACOUSTIC_MODEL

    def __post_init__(self) -> None:
        if not self.acoustic_model:
            raise ValueError('pocketsphinx.acoustic_model must be "bundled" or an adapted-model folder, got ""')
        if self.order < 1:
            raise ValueError(f"pocketsphinx.order must be >= 1, got {self.order}")
        if self.grammar_nbest < 0 or self.grammar_margin < 0:
            raise ValueError(
                f"need grammar_nbest >= 0 and grammar_margin >= 0, got {self.grammar_nbest}, {self.grammar_margin}"
            )
        if not self.warps or any(not 0.5 <= w <= 2.0 for w in self.warps):
            raise ValueError(f"pocketsphinx.warps must be a non-empty list of factors in [0.5, 2], got {self.warps}")
        if self.lw <= 0 or not 0 < self.wip <= 1:
            raise ValueError(f"need lw > 0 and 0 < wip <= 1, got lw={self.lw}, wip={self.wip}")


def _grammar_file(corpus_dir: Path, name: str) -> Path:
    path = corpus_dir / "grammar" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the domain LM needs a corpus made by `speechlm data synth` "
            f"(or use the general-English LM: lm=general)"
        )
    return path


def build_domain_lm(corpus_dir: str | Path, cfg: PocketsphinxConfig, out: str | Path, exclude: Collection[str] = ()) -> Path:
    """Write the domain ARPA LM for ``corpus_dir`` with ``cfg``'s order and smoothing to ``out``.

    The LM is re-estimated here (rather than reading ``grammar/domain.lm``) so that its order and
    discounting are judge settings, calibrated once and recorded with every WER. Sentences in
    ``exclude`` (compared after lower-casing and dropping punctuation) are left out of its text.
    """
    from speechlm.data import ngram
    from speechlm.data.grammar import tokenize

    corpus_dir = Path(corpus_dir)
    held_out = {" ".join(tokenize(s)) for s in exclude}
    lines = _grammar_file(corpus_dir, "lm_text.txt").read_text().splitlines()
    sentences = [line.split() for line in lines if line.strip() and " ".join(line.split()) not in held_out]
    words = _grammar_file(corpus_dir, "words.txt").read_text().split()
    ngram.build_arpa(sentences, out, order=cfg.order, smoothing=cfg.smoothing, discount=cfg.discount, vocab=words)
    return Path(out)


def _warp_settings(factor: float) -> dict[str, str]:
    """pocketsphinx front-end options warping the frequency axis by ``factor`` (1.0 = none)."""
    return {} if factor == 1.0 else {"warp_type": "inverse_linear", "warp_params": str(factor)}


def _vtln_suffix(cfg: PocketsphinxConfig) -> str:
    return "-vtln" if len(cfg.warps) > 1 else ""


@dataclass(frozen=True)
class PocketsphinxResult:
    """One decoded clip: the judged ``text`` and how the judge arrived at it."""

    text: str  # what ``transcribe`` returns
    ngram_text: str  # the n-gram decoder's best hypothesis (at the winning warp)
    warp: float | None = None  # the VTLN factor whose decoder won (None: nothing decoded)
    # Set when a grammatical N-best sentence passed the test (then it is ``text``): its score gap
    # to the top entry, log units per frame. None: the n-gram hypothesis stands.
    grammar_margin: float | None = None

    @property
    def grammar_accepted(self) -> bool:
        return self.grammar_margin is not None


class PocketsphinxJudge(AsrJudge):
    """pocketsphinx 5 (en-us model, by default MAP-adapted); RTF ~0.1-0.3 per warp factor on one core.

    Speaker normalisation by maximum-likelihood VTLN (Lee & Rose, 1996): each clip is decoded
    with the front end's frequency axis warped by every factor in ``cfg.warps`` and the
    best-scoring hypothesis is kept. The acoustic model was trained on adult read speech; the
    corpus's f0-shifted flite voices (``slt_high``, ``rms_deep``) lie far outside it and lost
    a third of their words without warping (docs/RESULTS.md, "Judges").

    Grammar test (domain LM): the n-gram LM lets the decoder emit word strings no corpus
    sentence has ("his our ladder"). The winning decoder's N-best list is walked in score order
    and its first sentence the corpus grammar (``grammar/domain.jsgf``) accepts is returned
    instead of the top hypothesis, provided it scores at most ``cfg.grammar_margin`` per frame
    below the top entry — a log-likelihood-ratio test between the best grammar-constrained and
    the best unconstrained hypothesis, with the scores pocketsphinx ranks its N-best by
    (acoustic + lw * LM + insertion penalty). On clean speech the grammatical sentence is usually
    the top entry itself; on scrambled audio none comes within the margin, so the n-gram's garbage
    stands and the judge is not fooled (accepted on 77% of clean and 2% of scrambled test clips,
    docs/RESULTS.md). Decoding with the grammar itself (pocketsphinx's FSG search) was slower and
    less accurate here.

    ``lm_exclude``: sentences left out of the domain LM's training text — for calibrating on a
    split whose text ``grammar/lm_text.txt`` holds (val), so that its WER is as honest as test's.
    """

    def __init__(
        self,
        cfg: PocketsphinxConfig = PocketsphinxConfig(),
        corpus_dir: str | Path | None = None,
        lm_exclude: Collection[str] = (),
    ) -> None:
        from pocketsphinx import Config, Decoder, get_model_path

        if cfg.lm == "domain" and corpus_dir is None:
            raise ValueError("the domain-LM ASR judge needs a corpus directory (or set lm=general)")
        self.cfg = cfg
        self._grammar: FsgModel | None = None  # the corpus grammar, when the grammar test runs
        settings = dict(lw=cfg.lw, wip=cfg.wip, samprate=JUDGE_SAMPLE_RATE, loglevel="FATAL")
        # Decoders read the model and LM when built, so their scratch folder can go right after.
        with tempfile.TemporaryDirectory(prefix="speechlm-asr-") as tmp:
            model = assemble_acoustic_model(cfg.acoustic_model, tmp)
            settings.update(model.decoder_settings())
            if cfg.lm == "general":
                settings.update(lm=get_model_path("en-us/en-us.lm.bin"), dict=get_model_path("en-us/cmudict-en-us.dict"))
            else:
                lm_path = build_domain_lm(corpus_dir, cfg, Path(tmp) / "domain.lm", exclude=lm_exclude)
                settings.update(lm=str(lm_path), dict=str(_grammar_file(Path(corpus_dir), "domain.dic")))
            # One decoder per warp factor.
            self._decoders = [Decoder(Config(**settings, **_warp_settings(w))) for w in cfg.warps]
        lm_tag = "general" if cfg.lm == "general" else f"domain{cfg.order}"
        self.name = f"pocketsphinx-{lm_tag}" + _vtln_suffix(cfg)
        if cfg.lm == "domain" and cfg.grammar_nbest > 0:
            self._grammar = self._decoders[0].read_jsgf(str(_grammar_file(Path(corpus_dir), "domain.jsgf")))
            self.name += "-grammar"
        if model.method is not None:  # an adapted acoustic model: the name says so (e.g. "...-map")
            self.name += f"-{model.method}"

    @property
    def uses_grammar(self) -> bool:
        """Whether the grammar test runs (domain LM with ``grammar_nbest > 0``)."""
        return self._grammar is not None

    def transcribe(self, wav: np.ndarray) -> str:
        return self.decode(wav).text

    def decode(self, wav: np.ndarray) -> PocketsphinxResult:
        """``transcribe`` with its evidence: the n-gram hypothesis, the warp, the grammar test."""
        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        if rms_db(wav) < SILENCE_DBFS:
            return PocketsphinxResult(text="", ngram_text="")
        pcm = to_pcm16(wav)
        best, best_score, warp = None, None, None
        for factor, dec in zip(self.cfg.warps, self._decoders):
            # Live CMN carries its running statistics from one utterance to the next, which made a clip's
            # transcript depend on the clips judged before it: every clip starts from fresh features.
            dec.reinit_feat()
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)  # the whole clip in one call
            dec.end_utt()
            hyp = dec.hyp()
            if hyp is not None and (best_score is None or hyp.score > best_score):
                best, best_score, warp = dec, hyp.score, factor
        if best is None:
            return PocketsphinxResult(text="", ngram_text="")
        ngram_text = best.hyp().hypstr.strip()
        # Each decoder keeps its last utterance's lattice, so the winner's N-best is still there.
        found = self._grammar_sentence(best) if self.uses_grammar else None
        if found is None:
            return PocketsphinxResult(text=ngram_text, ngram_text=ngram_text, warp=warp)
        return PocketsphinxResult(text=found[0], ngram_text=ngram_text, warp=warp, grammar_margin=found[1])

    def _grammar_sentence(self, dec: Decoder) -> tuple[str, float] | None:
        """(sentence, margin) for the first grammatical entry of ``dec``'s N-best list within the margin."""
        log = dec.get_logmath().log  # Hypothesis.score is a probability; compare in log units
        frames = max(dec.n_frames(), 1)
        top = None
        for hyp in itertools.islice(dec.nbest(), self.cfg.grammar_nbest):
            if hyp is None:  # the N-best iterator yields None for an entry it cannot spell out
                continue
            if hyp.score <= 0.0:  # underflowed: far below anything the margin admits
                break
            score = log(hyp.score)
            top = score if top is None else top
            margin = (top - score) / frames
            if margin > self.cfg.grammar_margin:
                break
            words = " ".join(w for w in hyp.hypstr.split() if w not in _SENTENCE_MARKERS)
            if words and self._grammar.accept(words):
                return words, margin
        return None


class WhisperJudge(AsrJudge):
    """Whisper from a local ``save_pretrained`` directory (e.g. openai/whisper-large-v3, as in the study)."""

    def __init__(self, path: str | Path, device: str = "cpu", language: str = "en", max_new_tokens: int = 200) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        path = require_dir(path, "Whisper")
        self.name = f"whisper:{path.name}"
        self.device = torch.device(device)
        self.processor = WhisperProcessor.from_pretrained(path)
        self.model = WhisperForConditionalGeneration.from_pretrained(path).to(self.device).eval()
        # The prompt (start, language, task, no-timestamps tokens) shares the decoder's positions.
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions // 2)
        # Multilingual checkpoints take a language/task prompt; tiny test models have none.
        lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
        self._generate_kwargs = {"language": language, "task": "transcribe"} if f"<|{language}|>" in lang_to_id else {}

    def transcribe(self, wav: np.ndarray) -> str:
        import torch

        wav = prepare_wav(wav, self.name, MIN_SECONDS)
        feats = self.processor.feature_extractor(wav, sampling_rate=JUDGE_SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            ids = self.model.generate(
                feats.input_features.to(self.device, self.model.dtype),
                max_new_tokens=self.max_new_tokens,
                **self._generate_kwargs,
            )
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
