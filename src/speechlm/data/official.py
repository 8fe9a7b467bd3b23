"""The reference code's on-disk token formats (JSONL), read and written losslessly.

The study's released code stores FACodec tokens of the 3 modelled streams (prosody ``a``, content
``b`` and ``c``; study Appendix E.2 and G.2) as one JSON object per line, in two shapes:

- **NTP** (1 head): ``{"uttid", "tokens": "<a420><b983><c726><a363>...", "text"}`` — the streams
  frame-wise interleaved (FWI, study Appendix E.3) into one string;
- **MTP** (g heads, study §2.2): ``{"uttid", "text", "tokens": {"head_a_1": ..., "head_b_1": ...,
  "head_c_1": ..., "head_a_2": ...}}`` — with ``F = g / 3`` frames per group, head ``<s>_<j>`` lists
  stream ``s`` at frame ``j`` of every group; heads ``j > 1`` are right-padded with
  ``<|speech_pad|>`` when the frame count is not a multiple of F. The format has no END token.

Every head count is one view of the same ``codes [K, T]``, so conversion is read -> codes ->
write, and the regrouping is the layout package's own FWI interleave + MTP grouping (no second
implementation). Written files match the fixtures byte for byte: keys in the order above,
``json.dumps`` separators, one ``\\n``-terminated row per line; non-ASCII text is ``\\u``-escaped
unless the source file stored it raw (``convert_file`` keeps the source's choice).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechlm.layout.interleave import deinterleave, interleave
from speechlm.layout.mtp import group, ungroup

PAD_TAG = "<|speech_pad|>"
STREAM_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_PAD = -1  # stands for PAD_TAG inside code tensors
_WELL_FORMED = re.compile(r"(?:<[a-z]\d+>|<\|speech_pad\|>)*")
_TAG = re.compile(r"<(?:([a-z])(\d+)|\|speech_pad\|)>")
_ANY_TAG = re.compile(r"<([^<>]*)>")
_HEAD_KEY = re.compile(r"head_([a-z])_([1-9]\d*)")


@dataclass(frozen=True)
class OfficialRow:
    """One utterance of the reference format."""

    uttid: str
    text: str
    codes: torch.Tensor  # [K, T] int64 per-stream codes (FACodec: prosody, content, content)
    extra: Mapping[str, Any] = field(default_factory=dict)  # any further keys, kept in file order


def read_official(path: Path | str, num_streams: int = 3) -> list[OfficialRow]:
    """Read an NTP or MTP file (any head count; rows may mix). Malformed rows raise ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference-format JSONL not found: {path}")
    letters = _letters(num_streams)
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                rows.append(_parse_row(line, f"{path}, line {line_no}", letters))
    return rows


def write_official(path: Path | str, rows: Iterable[OfficialRow], heads: int, *, ensure_ascii: bool = True) -> int:
    """Write ``rows`` with ``heads`` tokens per LM step (1 = NTP, else a multiple of K); returns rows written.

    The file is written to a temporary name and renamed into place, so it is never half-written.
    """
    path = Path(path)
    lines = [json.dumps(_row_object(row, heads), ensure_ascii=ensure_ascii) + "\n" for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(lines)


def convert_file(src: Path, dst: Path, heads: int) -> int:
    """Re-write ``src`` (NTP or MTP, any head count) with ``heads`` heads into ``dst``; returns rows written."""
    src = Path(src)
    rows = read_official(src)
    # json.dumps escapes non-ASCII by default; a file that stores raw UTF-8 was written without
    # escaping, and keeping that choice makes conversions byte-exact both ways.
    ensure_ascii = src.read_bytes().isascii()
    return write_official(dst, rows, heads, ensure_ascii=ensure_ascii)


# ---------------------------------------------------------------- writing


def _row_object(row: OfficialRow, heads: int) -> dict[str, Any]:
    if row.codes.dim() != 2:
        raise ValueError(f"uttid {row.uttid!r}: codes must be [K, T], got shape {tuple(row.codes.shape)}")
    K = row.codes.shape[0]
    letters = _letters(K)
    if not (heads == 1 or (heads > 0 and heads % K == 0)):
        raise ValueError(f"heads must be 1 (NTP) or a positive multiple of the {K} streams, got {heads}")
    if bool((row.codes < 0).any()):
        raise ValueError(f"uttid {row.uttid!r}: codes must be >= 0, got {int(row.codes.min())}")
    extra = {k: v for k, v in row.extra.items() if k not in ("uttid", "text", "tokens")}
    flat = interleave(row.codes[None].long(), torch.tensor([row.codes.shape[1]]), "fwi", chunk=1, fill=_PAD)
    if heads == 1:
        ntp = "".join(f"<{letters[i % K]}{c}>" for i, c in enumerate(flat.tokens[0].tolist()))
        return {"uttid": row.uttid, "tokens": ntp, "text": row.text, **extra}
    # MTP groups (study §2.2): g = heads tokens = F frames; slot f*K + k holds stream k of frame f.
    slots = group(flat.tokens, flat.lengths, heads, end=None, pad=_PAD).ids[0]  # [J, heads]
    tokens = {
        f"head_{letters[k]}_{f + 1}": _head_string(slots[:, f * K + k], letters[k])
        for f in range(heads // K)
        for k in range(K)
    }
    return {"uttid": row.uttid, "text": row.text, "tokens": tokens, **extra}


def _head_string(column: torch.Tensor, letter: str) -> str:
    return "".join(PAD_TAG if c == _PAD else f"<{letter}{c}>" for c in column.tolist())


# ---------------------------------------------------------------- reading


def _letters(num_streams: int) -> str:
    """The tag letters of a K-stream file: a, b, c, ..."""
    limit = len(STREAM_LETTERS)
    if isinstance(num_streams, bool) or not isinstance(num_streams, int) or not 1 <= num_streams <= limit:
        raise ValueError(f"the reference format names 1..{limit} streams (a, b, c, ...), got {num_streams!r}")
    return STREAM_LETTERS[:num_streams]


def _parse_row(line: str, where: str, letters: str) -> OfficialRow:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("uttid", "text", "tokens") if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    uttid, text, tokens = obj["uttid"], obj["text"], obj["tokens"]
    if not isinstance(uttid, str) or not isinstance(text, str):
        raise ValueError(f"{where}: 'uttid' and 'text' must be strings, got {uttid!r} and {text!r}")
    where = f"{where} (uttid {uttid!r})"
    if isinstance(tokens, str):
        codes = _parse_ntp(tokens, where, letters)
    elif isinstance(tokens, dict):
        codes = _parse_mtp(tokens, where, letters)
    else:
        raise ValueError(f"{where}: 'tokens' must be a string (NTP) or an object of heads (MTP), got {tokens!r:.60}")
    extra = {k: v for k, v in obj.items() if k not in ("uttid", "text", "tokens")}
    return OfficialRow(uttid, text, codes, extra)


def _parse_ntp(tokens: str, where: str, letters: str) -> torch.Tensor:
    """FWI token string -> ``codes [K, T]``."""
    where = f"{where}, tokens"
    K = len(letters)
    streams, codes = _parse_tags(tokens, where)
    expected = (letters * (len(streams) // K + 1))[: len(streams)]
    if "".join(streams) != expected:
        i = next(i for i, (got, want) in enumerate(zip(streams, expected)) if got != want)
        _check_letter(streams[i], letters, tokens, i, where)
        raise ValueError(
            f"{where}, {_at(tokens, i)}: expected stream {expected[i]!r} (frame-wise order {', '.join(letters)}), "
            f"got {'padding' if codes[i] == _PAD else repr(streams[i])}"
        )
    if len(codes) % K:
        raise ValueError(f"{where}: {len(codes)} tokens end mid-frame (not a multiple of the {K} streams {letters})")
    flat = torch.tensor(codes, dtype=torch.long)[None]
    return deinterleave(flat, torch.tensor([len(codes)]), K, "fwi", chunk=1, fill=_PAD).codes[0]


def _parse_mtp(heads: dict[str, Any], where: str, letters: str) -> torch.Tensor:
    """Head strings -> ``codes [K, T]`` (pads only at the end of heads 2..F, whole frames at a time)."""
    K = len(letters)
    F = 1
    for key, value in heads.items():
        m = _HEAD_KEY.fullmatch(key)
        if m is None:
            raise ValueError(f"{where}: unknown head {key!r} (expected head_<stream letter>_<frame number>)")
        _check_letter(m.group(1), letters, None, None, f"{where}, {key}")
        if not isinstance(value, str):
            raise ValueError(f"{where}, {key}: expected a token string, got {value!r:.60}")
        F = max(F, int(m.group(2)))
    names = [f"head_{letters[k]}_{f + 1}" for f in range(F) for k in range(K)]  # slot order f*K + k
    for name in names:
        if name not in heads:
            raise ValueError(f"{where}: missing head {name!r} ({F * K} heads expected for {F} frames per group)")
    columns = [_parse_head(heads[name], letters[i % K], i < K, f"{where}, {name}") for i, name in enumerate(names)]
    J = len(columns[0])
    for name, column in zip(names, columns):
        if len(column) != J:
            raise ValueError(f"{where}: heads of unequal length: {names[0]} has {J} tokens, {name} has {len(column)}")
    grid = torch.tensor(columns, dtype=torch.long).reshape(F * K, J).T.contiguous()  # [J, G]
    _check_padding(grid.reshape(J, F, K) == _PAD, names, heads, where)
    flat = ungroup(grid[None], stop_ids=(_PAD,))  # [1, J*G]; real tokens end at the first pad
    return deinterleave(flat.tokens, flat.lengths, K, "fwi", chunk=1, fill=_PAD).codes[0]


def _parse_head(tokens: str, letter: str, first: bool, where: str) -> list[int]:
    """One head's codes (``_PAD`` for pads): every tag of its stream; no pad in a first head."""
    streams, codes = _parse_tags(tokens, where)
    if set(streams) <= {letter, ""} and not (first and _PAD in codes):
        return codes
    for i, (stream, code) in enumerate(zip(streams, codes)):
        if code == _PAD and first:
            raise ValueError(f"{where}, {_at(tokens, i)}: padding in a first head (only heads 2.. are right-padded)")
        if code != _PAD and stream != letter:
            raise ValueError(f"{where}, {_at(tokens, i)}: a stream {stream!r} tag in the head of stream {letter!r}")
    raise AssertionError("unreachable: the fast check found a problem the scan did not")


def _check_padding(pad: torch.Tensor, names: list[str], heads: dict[str, Any], where: str) -> None:
    """``pad [J, F, K]``: whole frames only, and only after the last real frame."""
    J, F, K = pad.shape
    split = pad.any(-1) & ~pad.all(-1)  # [J, F] frames padded in some streams only
    if bool(split.any()):
        j, f = (int(i) for i in split.nonzero()[0])
        real = [names[f * K + k] for k in range(K) if not pad[j, f, k]]
        padded = [names[f * K + k] for k in range(K) if pad[j, f, k]]
        raise ValueError(f"{where}: group {j} frame {f + 1} is padding in {padded} but real in {real}")
    frames = pad[..., 0].reshape(J * F)
    T = int((~frames).sum())
    late = frames != (torch.arange(J * F) >= T)  # a pad before real frames
    if bool(late.any()):
        q = int(late.nonzero()[0])
        name = names[(q % F) * K]
        raise ValueError(
            f"{where}, {name}, {_at(heads[name], q // F)}: {PAD_TAG} before real tokens "
            f"(padding may only fill the end of the last group)"
        )


def _parse_tags(tokens: str, where: str) -> tuple[list[str], list[int]]:
    """``"<a12><b7>..."`` -> (stream letters, codes); a pad tag gives ``("", _PAD)``."""
    if _WELL_FORMED.fullmatch(tokens) is None:
        _raise_malformed(tokens, where)
    found = _TAG.findall(tokens)
    return [letter for letter, _ in found], [int(code) if code else _PAD for _, code in found]


def _raise_malformed(tokens: str, where: str) -> None:
    """Name the first thing in ``tokens`` that is not a well-formed tag, and where it is."""
    pos = index = 0
    while pos < len(tokens):
        m = _ANY_TAG.match(tokens, pos)
        if m is None:
            stop = tokens.find("<", pos + 1)
            junk = tokens[pos : stop if stop > 0 else len(tokens)]
            raise ValueError(f"{where}, token {index} (char {pos}): junk {junk[:24]!r} where a tag should start")
        if _TAG.fullmatch(m.group(0)) is None:
            body = m.group(1)
            what = "non-integer code in tag" if body[:1].islower() and body[:1].isascii() else "bad tag"
            raise ValueError(f"{where}, token {index} (char {pos}): {what} {m.group(0)[:24]!r}")
        pos, index = m.end(), index + 1


def _check_letter(letter: str, letters: str, tokens: str | None, index: int | None, where: str) -> None:
    if letter and letter not in letters:
        at = f", {_at(tokens, index)}" if tokens is not None and index is not None else ""
        streams = ", ".join(letters)
        raise ValueError(f"{where}{at}: unknown stream letter {letter!r} (this file's streams are {streams})")


def _at(tokens: str, index: int) -> str:
    """``"token i (char c)"`` for the i-th tag of a well-formed token string."""
    for i, m in enumerate(_TAG.finditer(tokens)):
        if i == index:
            return f"token {index} (char {m.start()})"
    return f"token {index}"
