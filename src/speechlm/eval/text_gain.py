"""How much a trained SLM's speech depends on its text: ``speechlm textgain CKPT --data DIR --json OUT``.

A TTS model that has not learnt to read still scores a fair speech loss: it models what speech codes
look like (and whose voice they are in) without following the words. The judge WER then sits near
100 % for every model, which hides any difference between them. This diagnostic measures the words'
share directly, teacher-forced: each test utterance's ground-truth speech codes are scored twice,
after its own sentence and after another sentence of the same split (same speaker where the split
has another of theirs, same speaker vector, the codes themselves unchanged):

    gain = NLL(speech | other text) - NLL(speech | own text)      (nats per speech token)

what the text adds to the true speech history (a pointwise text-speech mutual information under
the model, END included: knowing when to stop is part of reading). 0 means the text is ignored. The
gain per quarter of the utterance (by speech-step position) shows where reading stops: a model that
only learnt sentence openings has its gain in the first quarter. Measure it on sentences the model
has not seen: on a memorised training sentence the speech history alone identifies the rest, so the
text adds little even to a model that says it perfectly (docs/RESULTS.md, session 5).

A model trained on ASR too gets the same test in the other direction (:func:`asr_gain`): each
sentence's transcript scored teacher-forced after its own speech and after the other utterance's

    asr gain = NLL(text | other speech) - NLL(text | own speech)      (nats per text token)

which separates "the model cannot align text and speech at all" from "it can listen but not read".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from speechlm.data.codes import CodeCache, speaker_means
from speechlm.data.dataset import EncodedExample, SequenceEncoder, collate, speaker_vector
from speechlm.data.manifest import Corpus, Utterance, spread
from speechlm.data.tasks import Task, TaskFormatter
from speechlm.eval.model_alignment import eval_code_cache
from speechlm.model.losses import IGNORE_INDEX
from speechlm.runtime import resolve_device
from speechlm.train.checkpoint import LoadedSLM, load_slm

QUARTERS = 4


@dataclass(frozen=True)
class TextGain:
    """Teacher-forced speech NLL with the utterance's own text vs another sentence's (nats/token)."""

    matched_nll: float
    mismatched_nll: float
    gain: float  # mismatched_nll - matched_nll, over all scored tokens
    gain_by_quarter: tuple[float, ...]  # [4] the same per quarter of each utterance's speech steps
    items: int
    tokens: int  # speech tokens scored per pass
    per_item: dict[str, float]  # utterance id -> its own gain (mean over its tokens)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mismatched_texts(rows: list[Utterance]) -> list[str]:
    """For each row, the text of another row: the next one of the same speaker (cyclically), or the
    next row of the list when a speaker has only one. Every text differs from the row's own."""
    return [rows[j].text for j in mismatched_rows(rows)]


def mismatched_rows(rows: list[Utterance]) -> list[int]:
    """For each row, the index of the row :func:`mismatched_texts` takes its other text from."""
    if len(rows) < 2:
        raise ValueError("the text gain needs at least 2 utterances to swap texts between")
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_speaker[row.speaker].append(i)
    out: list[int] = []
    for i, row in enumerate(rows):
        mine = by_speaker[row.speaker]
        j = mine[(mine.index(i) + 1) % len(mine)] if len(mine) > 1 else (i + 1) % len(rows)
        if rows[j].text == row.text:
            j = next((k for k in range(len(rows)) if rows[k].text != row.text), j)
        if rows[j].text == row.text:
            raise ValueError("every utterance in the selection has the same text; nothing to swap")
        out.append(j)
    return out


@dataclass(frozen=True)
class TokenScores:
    """Speech-token NLLs of a list of examples, flattened over their scored tokens."""

    nll: torch.Tensor  # [N] nats
    item: torch.Tensor  # [N] index of the example each token belongs to
    quarter: torch.Tensor  # [N] quarter (0-3) of that example's speech steps the token's position is in


def example_maker(loaded: LoadedSLM, corpus: Corpus, cache: CodeCache) -> Callable[[Utterance, str, Utterance, Task], EncodedExample]:
    """``encode(row, text, source, task)``: ``row`` as a ``task`` example with ``text`` as its sentence and
    ``source``'s cached codes and speaker vector as its speech (the swaps both gains are made of)."""
    formatter = TaskFormatter(loaded.config.data.task)
    encoder = SequenceEncoder(loaded.text_tokenizer, loaded.layout)
    means = speaker_means(cache, corpus) if loaded.config.data.speaker_vector == "speaker_mean" else {}

    def encode(row: Utterance, text: str, source: Utterance, task: Task) -> EncodedExample:
        codes = cache.get(source.id)
        formatted = formatter.format(replace(row, text=text), task)
        speaker = speaker_vector(source, codes, means) if formatted.has_speaker else None
        return encoder.encode(formatted, codes, speaker)

    return encode


@torch.inference_mode()
def token_nll(loaded: LoadedSLM, examples: list[EncodedExample], batch_size: int = 8) -> TokenScores:
    """Teacher-forced NLL of every supervised speech token of ``examples`` (END included)."""
    model = loaded.model.eval()
    device = next(model.parameters()).device
    pad = dict(text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    nll, item, quarter = [], [], []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], **pad).to(device)
        logits = model(batch).speech_logits  # [B,S,G,Vs], -inf outside each slot's ids
        assert logits is not None
        targets = batch.speech_labels[:, 1:]  # [B,S-1,G]: hidden state s predicts position s+1
        valid = targets != IGNORE_INDEX
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # [B,S-1,G]
        steps = batch.speech_steps()[:, 1:]  # [B,S-1] step index of each target position
        n_steps = steps.max(dim=1, keepdim=True).values.clamp_min(0) + 1  # [B,1]
        q = (steps.clamp_min(0) * QUARTERS // n_steps).clamp_max(QUARTERS - 1)  # [B,S-1]
        rows = torch.arange(start, start + targets.shape[0], device=device)[:, None, None].expand_as(targets)
        nll.append(picked[valid].cpu())
        item.append(rows[valid].cpu())
        quarter.append(q.unsqueeze(-1).expand_as(targets)[valid].cpu())
    return TokenScores(torch.cat(nll), torch.cat(item), torch.cat(quarter))


def text_gain(
    loaded: LoadedSLM,
    corpus: Corpus,
    split: str = "test",
    *,
    limit: int = 64,
    batch_size: int = 8,
    cache_root: Path | None = None,
    cache: CodeCache | None = None,
) -> TextGain:
    """The text gain of ``loaded`` over ``limit`` TTS rows of ``split`` at an even stride (every voice
    represented; 0 = all rows)."""
    if "tts" not in loaded.config.data.task.tasks:
        raise ValueError(f"{loaded.path} was not trained on TTS; the text gain scores read-aloud speech")
    rows = spread(corpus.tts(split), limit)
    others = mismatched_texts(rows)
    encode = example_maker(loaded, corpus, cache or eval_code_cache(loaded, corpus, split, cache_root))
    own = token_nll(loaded, [encode(r, r.text, r, "tts") for r in rows], batch_size)
    other = token_nll(loaded, [encode(r, t, r, "tts") for r, t in zip(rows, others)], batch_size)
    if not (torch.equal(own.item, other.item) and torch.equal(own.quarter, other.quarter)):
        raise AssertionError("the two passes scored different speech tokens")
    diff = other.nll - own.nll
    by_q = tuple(float(diff[own.quarter == q].mean()) if bool((own.quarter == q).any()) else float("nan") for q in range(QUARTERS))
    per_item = {row.id: float(diff[own.item == i].mean()) for i, row in enumerate(rows) if bool((own.item == i).any())}
    return TextGain(
        matched_nll=float(own.nll.mean()),
        mismatched_nll=float(other.nll.mean()),
        gain=float(diff.mean()),
        gain_by_quarter=by_q,
        items=len(rows),
        tokens=int(own.nll.numel()),
        per_item=per_item,
    )


@dataclass(frozen=True)
class AsrGain:
    """Teacher-forced transcript NLL after the utterance's own speech vs another utterance's."""

    matched_nll: float  # nats per supervised text token of the transcript (its end included)
    mismatched_nll: float
    gain: float  # mismatched_nll - matched_nll
    matched_accuracy: float  # next-token accuracy of the transcript after its own speech
    mismatched_accuracy: float
    items: int
    tokens: int  # text tokens scored per pass

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.inference_mode()
def text_token_nll(loaded: LoadedSLM, examples: list[EncodedExample], batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced NLL [N] and argmax hit [N] of every supervised text token of ``examples``."""
    model = loaded.model.eval()
    device = next(model.parameters()).device
    pad = dict(text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    nll, hit = [], []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], **pad).to(device)
        logits = model(batch).text_logits  # [B,S,Vt]
        assert logits is not None
        targets = batch.text_labels[:, 1:]  # [B,S-1]
        valid = targets != IGNORE_INDEX
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        nll.append(-logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)[valid].cpu())
        hit.append((logp.argmax(-1) == targets)[valid].cpu())
    return torch.cat(nll), torch.cat(hit)


def asr_gain(
    loaded: LoadedSLM,
    corpus: Corpus,
    split: str = "test",
    *,
    limit: int = 64,
    batch_size: int = 8,
    cache_root: Path | None = None,
    cache: CodeCache | None = None,
) -> AsrGain:
    """The ASR direction of :func:`text_gain`, over the same rows: each transcript after its own speech
    (codes + speaker vector) and after those of the row whose text :func:`text_gain` swaps in."""
    if "asr" not in loaded.config.data.task.tasks:
        raise ValueError(f"{loaded.path} was not trained on ASR; the ASR gain scores transcripts of speech")
    rows = spread(corpus.tts(split), limit)
    others = mismatched_rows(rows)
    encode = example_maker(loaded, corpus, cache or eval_code_cache(loaded, corpus, split, cache_root))
    own_nll, own_hit = text_token_nll(loaded, [encode(r, r.text, r, "asr") for r in rows], batch_size)
    other_nll, other_hit = text_token_nll(loaded, [encode(r, r.text, rows[j], "asr") for r, j in zip(rows, others)], batch_size)
    if own_nll.shape != other_nll.shape:
        raise AssertionError("the two passes scored different text tokens")
    return AsrGain(
        matched_nll=float(own_nll.mean()),
        mismatched_nll=float(other_nll.mean()),
        gain=float((other_nll - own_nll).mean()),
        matched_accuracy=float(own_hit.float().mean()),
        mismatched_accuracy=float(other_hit.float().mean()),
        items=len(rows),
        tokens=int(own_nll.numel()),
    )


def text_gain_checkpoint(
    ckpt: str | Path, corpus_dir: str | Path, *, split: str = "test", limit: int = 64, device: str = "auto"
) -> dict[str, Any]:
    """:func:`text_gain` of a checkpoint folder, as a JSON-ready record."""
    loaded = load_slm(ckpt, device=resolve_device(device))
    corpus = Corpus.open(corpus_dir)
    cache = eval_code_cache(loaded, corpus, split)  # one codec load and fingerprint for both directions
    result = text_gain(loaded, corpus, split, limit=limit, cache=cache)
    asr = asr_gain(loaded, corpus, split, limit=limit, cache=cache).to_dict() if "asr" in loaded.config.data.task.tasks else None
    return {"checkpoint": str(loaded.path), "split": split, **result.to_dict(), "asr": asr}


def format_text_gain(report: dict[str, Any]) -> str:
    quarters = " / ".join(f"{g:+.3f}" for g in report["gain_by_quarter"])
    text = (
        f"speech NLL with own text {report['matched_nll']:.3f}, with another sentence {report['mismatched_nll']:.3f} "
        f"nats/token -> text gain {report['gain']:+.3f} (by quarter: {quarters}); "
        f"{report['items']} utterances, {report['tokens']} speech tokens"
    )
    asr = report.get("asr")
    if asr:
        text += (
            f"\ntranscript NLL after own speech {asr['matched_nll']:.3f} (next-token accuracy {asr['matched_accuracy']:.3f}), "
            f"after another utterance's {asr['mismatched_nll']:.3f} ({asr['mismatched_accuracy']:.3f}) nats/token "
            f"-> ASR gain {asr['gain']:+.3f}; {asr['tokens']} text tokens"
        )
    return text
