import numpy as np
import pytest
import soundfile as sf

from speechlm import audio


def tone(sr=16000, seconds=0.5, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_round_trip_downmix_and_resample(tmp_path):
    x = tone(22050)
    stereo = np.stack([x, x], axis=1)
    p = tmp_path / "s.wav"
    sf.write(p, stereo, 22050)
    a = audio.load_audio(p, sample_rate=16000)
    assert a.sample_rate == 16000 and a.wav.ndim == 1
    assert abs(len(a.wav) - 8000) <= 1
    # resampling keeps the tone: the spectral peak stays at 440 Hz
    spec = np.abs(np.fft.rfft(a.wav))
    assert abs(np.argmax(spec) * 16000 / len(a.wav) - 440) < 5


def test_flac_and_ogg_are_read(tmp_path):
    for ext in ("flac", "ogg"):
        p = tmp_path / f"t.{ext}"
        sf.write(p, tone(), 16000)
        assert audio.load_audio(p).sample_rate == 16000


def test_save_is_16bit_and_clipped(tmp_path):
    p = audio.save_audio(tmp_path / "o" / "x.wav", np.array([2.0, -2.0, 0.0], np.float32), 16000)
    data, sr = sf.read(p)
    assert sf.info(str(p)).subtype == "PCM_16" and sr == 16000
    assert data.max() <= 1.0 and data.min() >= -1.0


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        audio.load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(audio.AudioError, match="empty.wav: file is empty"):
        audio.load_audio(p)


def test_zero_length_audio(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(audio.AudioError, match="zero.wav: audio is empty"):
        audio.load_audio(p)


def test_corrupt_header(tmp_path):
    p = tmp_path / "bad.wav"
    sf.write(p, tone(), 16000)
    raw = bytearray(p.read_bytes())
    raw[0:4] = b"JUNK"
    p.write_bytes(bytes(raw))
    with pytest.raises(audio.AudioError, match="bad.wav: corrupt or unreadable header"):
        audio.load_audio(p)


def test_unsupported_format(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not audio")
    with pytest.raises(audio.AudioError, match="notes.txt: unsupported format"):
        audio.load_audio(p)


def test_nan_samples(tmp_path):
    p = tmp_path / "nan.wav"
    x = tone()
    x[100] = np.nan
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="nan.wav: audio has 1 NaN/inf samples"):
        audio.load_audio(p)


def test_absurd_sample_rate(tmp_path):
    p = tmp_path / "slow.wav"
    sf.write(p, tone(), 100)
    with pytest.raises(audio.AudioError, match="slow.wav: sample rate 100 Hz"):
        audio.load_audio(p)


def test_too_short(tmp_path):
    p = tmp_path / "short.wav"
    sf.write(p, tone(seconds=0.01), 16000)
    with pytest.raises(audio.AudioError, match="shorter than 0.1 s"):
        audio.load_audio(p, min_seconds=0.1)
