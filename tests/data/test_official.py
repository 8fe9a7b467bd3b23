import itertools
import json
from pathlib import Path

import pytest
import torch

from speechlm.cli import main as cli_main
from speechlm.data.official import PAD_TAG, OfficialRow, convert_file, read_official, write_official
from speechlm.layout.speech import LayoutConfig, SpeechLayout

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official-demo"
NTP, H3, H6 = FIXTURES / "ntp-example.jsonl", FIXTURES / "mtp-h3-example.jsonl", FIXTURES / "mtp-h6-example.jsonl"


def assert_same_rows(a: list[OfficialRow], b: list[OfficialRow]) -> None:
    assert [(r.uttid, r.text, dict(r.extra)) for r in a] == [(r.uttid, r.text, dict(r.extra)) for r in b]
    for x, y in zip(a, b):
        assert torch.equal(x.codes, y.codes), x.uttid


# ---------------------------------------------------------------- the released fixtures


def test_3_heads_to_6_reproduces_the_6_head_fixture(tmp_path):
    assert convert_file(H3, tmp_path / "h6.jsonl", heads=6) == 10
    assert (tmp_path / "h6.jsonl").read_bytes() == H6.read_bytes()


def test_6_heads_to_3_reproduces_the_3_head_fixture(tmp_path):
    convert_file(H6, tmp_path / "h3.jsonl", heads=3)
    # The released 3-head file lacks the final newline that ends every other line (and every line
    # of the other fixtures); the writer always terminates lines, otherwise the bytes are identical.
    assert not H3.read_bytes().endswith(b"\n")
    assert (tmp_path / "h3.jsonl").read_bytes() == H3.read_bytes() + b"\n"


def test_3_to_12_to_6_reproduces_the_6_head_fixture(tmp_path):
    convert_file(H3, tmp_path / "h12.jsonl", heads=12)
    convert_file(tmp_path / "h12.jsonl", tmp_path / "h6.jsonl", heads=6)
    assert (tmp_path / "h6.jsonl").read_bytes() == H6.read_bytes()


def test_ntp_through_every_head_count_and_back_is_byte_exact(tmp_path):
    src = NTP
    for i, heads in enumerate([3, 6, 12, 1]):
        dst = tmp_path / f"{i}-h{heads}.jsonl"
        convert_file(src, dst, heads=heads)
        src = dst
    assert src.read_bytes() == NTP.read_bytes()


@pytest.mark.parametrize("fixture", [NTP, H3, H6], ids=lambda p: p.stem)
def test_every_pair_of_head_counts_is_lossless(tmp_path, fixture):
    rows = read_official(fixture)
    for a, b in itertools.permutations([1, 3, 6, 12], 2):
        write_official(tmp_path / "a.jsonl", rows, heads=a)
        convert_file(tmp_path / "a.jsonl", tmp_path / "b.jsonl", heads=b)
        assert_same_rows(read_official(tmp_path / "b.jsonl"), rows)


def test_fixture_codes_match_the_raw_tags():
    ntp = read_official(NTP)[0]
    assert ntp.codes.shape == (3, 531 // 3)
    assert ntp.codes[:, 0].tolist() == [420, 983, 726]  # "<a420><b983><c726>..."
    h3, h6 = read_official(H3)[0], read_official(H6)[0]
    assert h3.codes.shape == (3, 185) and torch.equal(h3.codes, h6.codes)
    head_a_2 = json.loads(H6.read_text().splitlines()[0])["tokens"]["head_a_2"]
    assert head_a_2.startswith("<a663><a382>") and head_a_2.endswith(PAD_TAG)  # frames 2, 4, ...; 185 is odd


def test_mtp_heads_are_the_slm_layouts_group_slots():
    # head <s>_<f> = slot (f-1)*K + k of the SLM's MTP groups, so files and training agree
    line = json.loads(H6.read_text().splitlines()[0])
    row = read_official(H6)[0]
    layout = SpeechLayout(LayoutConfig(group_size=6), (1024,) * 3, ("prosody", "content0", "content1"))
    ids = layout.encode(row.codes[None], torch.tensor([row.codes.shape[1]])).ids[0]  # [J, 6], END appended
    for f in range(2):
        for k, s in enumerate("abc"):
            column, offset = ids[:, 3 * f + k].tolist(), layout.vocab.offsets[k]
            tags = "".join(f"<{s}{i - offset}>" if i < layout.vocab.end_id else PAD_TAG for i in column)
            assert tags == line["tokens"][f"head_{s}_{f + 1}"]


def test_cli_convert(tmp_path, capsys):
    assert cli_main(["data", "convert", str(H3), str(tmp_path / "out.jsonl"), "--heads", "6"]) == 0
    assert "wrote 10 rows with 6 heads" in capsys.readouterr().out
    assert (tmp_path / "out.jsonl").read_bytes() == H6.read_bytes()
    missing = tmp_path / "missing.jsonl"
    assert cli_main(["data", "convert", str(missing), str(tmp_path / "x.jsonl"), "--heads", "3"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


# ---------------------------------------------------------------- writing and reading in general


@pytest.mark.parametrize("heads", [1, 3, 6, 12, 24])
def test_random_codes_round_trip_including_empty_and_short(tmp_path, heads):
    g = torch.Generator().manual_seed(heads)
    rows = [OfficialRow(f"u{T}", f"t{T}", torch.randint(0, 1024, (3, T), generator=g)) for T in (0, 1, 2, 3, 4, 5, 13)]
    assert write_official(tmp_path / "r.jsonl", rows, heads=heads) == len(rows)
    assert_same_rows(read_official(tmp_path / "r.jsonl"), rows)


def test_other_stream_counts_round_trip(tmp_path):
    rows = [OfficialRow("u", "t", torch.arange(12).reshape(2, 6))]
    write_official(tmp_path / "k2.jsonl", rows, heads=4)
    line = json.loads((tmp_path / "k2.jsonl").read_text())
    assert list(line["tokens"]) == ["head_a_1", "head_b_1", "head_a_2", "head_b_2"]
    assert_same_rows(read_official(tmp_path / "k2.jsonl", num_streams=2), rows)


def test_non_ascii_text_follows_the_source_escaping(tmp_path):
    rows = [OfficialRow("u1", "Café “quoted” — ok", torch.zeros(3, 2, dtype=torch.long))]
    write_official(tmp_path / "esc.jsonl", rows, heads=1)
    assert (tmp_path / "esc.jsonl").read_bytes().isascii()  # json.dumps default: \u escapes
    write_official(tmp_path / "raw.jsonl", rows, heads=1, ensure_ascii=False)
    for name in ("esc", "raw"):
        convert_file(tmp_path / f"{name}.jsonl", tmp_path / f"{name}3.jsonl", heads=3)
        convert_file(tmp_path / f"{name}3.jsonl", tmp_path / f"{name}1.jsonl", heads=1)
        assert (tmp_path / f"{name}1.jsonl").read_bytes() == (tmp_path / f"{name}.jsonl").read_bytes()
        assert read_official(tmp_path / f"{name}1.jsonl")[0].text == rows[0].text


def test_extra_keys_are_kept(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text(json.dumps({"uttid": "u", "tokens": "<a1><b2><c3>", "text": "t", "speaker": "Nahida"}) + "\n")
    convert_file(src, tmp_path / "y.jsonl", heads=3)
    convert_file(tmp_path / "y.jsonl", tmp_path / "z.jsonl", heads=1)
    assert (tmp_path / "z.jsonl").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("heads", [0, 2, 4, 5])
def test_bad_head_count_is_rejected(tmp_path, heads):
    with pytest.raises(ValueError, match=f"heads must be 1 .* got {heads}"):
        write_official(tmp_path / "x.jsonl", [OfficialRow("u", "t", torch.zeros(3, 2, dtype=torch.long))], heads=heads)


# ---------------------------------------------------------------- malformed input


def ntp(tokens) -> dict:
    return {"uttid": "bad-utt", "tokens": tokens, "text": "t"}


def mtp(**changes: str) -> dict:
    """A 6-head row of frames 1..3 (frame 4 padded), with some heads replaced (None drops a head)."""
    heads = {f"head_{s}_1": f"<{s}1><{s}3>" for s in "abc"} | {f"head_{s}_2": f"<{s}2>{PAD_TAG}" for s in "abc"}
    heads = {k: v for k, v in (heads | changes).items() if v is not None}
    return {"uttid": "bad-utt", "text": "t", "tokens": heads}


PAD_RE = r"<\|speech_pad\|>"
MALFORMED = {
    "bad tag": (ntp("<a1><b2><c3><A4><b5><c6>"), r"tokens, token 3 \(char 12\): bad tag '<A4>'"),
    "unknown letter": (ntp("<a1><b2><d3>"), r"token 2 \(char 8\): unknown stream letter 'd'"),
    "non-integer": (ntp("<a1><b2x><c3>"), r"token 1 \(char 4\): non-integer code in tag '<b2x>'"),
    "junk": (ntp("<a1><b2> <c3>"), r"token 2 \(char 8\): junk ' '"),
    "unterminated": (ntp("<a1><b2><c3"), r"token 2 \(char 8\): junk '<c3'"),
    "order": (ntp("<a1><c2><b3>"), r"token 1 \(char 4\): expected stream 'b'"),
    "mid-frame": (ntp("<a1><b2><c3><a4>"), "4 tokens end mid-frame"),
    "pad in ntp": (ntp("<a1><b2>" + PAD_TAG), r"token 2 \(char 8\): expected stream 'c'.*got padding"),
    "tokens type": (ntp([1, 2, 3]), "'tokens' must be a string"),
    "missing key": ({"uttid": "bad-utt", "tokens": ""}, r"missing key\(s\) \['text'\]"),
    "unequal heads": (mtp(head_c_1="<c1>"), "heads of unequal length: head_a_1 has 2 tokens, head_c_1 has 1"),
    "pad in first head": (mtp(head_b_1="<b1>" + PAD_TAG), r"head_b_1, token 1 \(char 4\): padding in a first head"),
    "missing head": (mtp(head_b_2=None), "missing head 'head_b_2'"),
    "unknown head": (mtp(head_d_1="<d1><d2>"), "head_d_1: unknown stream letter 'd'"),
    "bad head key": (mtp(heada1="<a1>"), "unknown head 'heada1'"),
    "wrong letter": (mtp(head_a_2="<b2>" + PAD_TAG), r"head_a_2, token 0 \(char 0\): a stream 'b' tag in the head of"),
    "pad mid-head": (
        mtp(**{f"head_{s}_2": f"{PAD_TAG}<{s}4>" for s in "abc"}),
        rf"head_a_2, token 0 \(char 0\): {PAD_RE} before real tokens",
    ),
    "pad in some streams": (
        mtp(head_c_2="<c2><c4>"),
        r"group 1 frame 2 is padding in \['head_a_2', 'head_b_2'\] but real in \['head_c_2'\]",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=str)
def test_malformed_rows_name_file_line_uttid_and_position(tmp_path, case):
    obj, match = MALFORMED[case]
    src = tmp_path / "broken.jsonl"
    good = {"uttid": "ok", "tokens": "<a1><b2><c3>", "text": "fine"}
    src.write_text(json.dumps(good) + "\n" + json.dumps(obj) + "\n")
    with pytest.raises(ValueError, match=match) as err:
        read_official(src)
    msg = str(err.value)
    assert f"{src}, line 2" in msg
    if case != "missing key":
        assert "(uttid 'bad-utt')" in msg


def test_invalid_json_and_missing_file(tmp_path):
    src = tmp_path / "j.jsonl"
    src.write_text('{"uttid": "u", "tokens": "<a1>"\n')
    with pytest.raises(ValueError, match=rf"{src}, line 1: not valid JSON"):
        read_official(src)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_official(tmp_path / "nope.jsonl")
