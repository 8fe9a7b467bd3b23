from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from speechlm import config as C


@dataclass(frozen=True)
class Inner:
    width: int = 32
    kind: Literal["linear", "mlp"] = "linear"


@dataclass(frozen=True)
class Outer:
    name: str
    lr: float = 5e-4
    layers: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    out: Path | None = None
    flag: bool = False


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_maps_one_to_one_and_round_trips(tmp_path):
    p = write(tmp_path, "name: x\nlr: 1\nlayers: [3, 4]\ninner: {width: 8, kind: mlp}\nout: runs/a\n")
    cfg = C.load(Outer, p)
    assert cfg == Outer(name="x", lr=1.0, layers=(3, 4), inner=Inner(8, "mlp"), out=Path("runs/a"))
    assert isinstance(cfg.lr, float)
    assert C.from_dict(Outer, C.to_dict(cfg)) == cfg
    again = tmp_path / "again.yaml"
    C.dump(cfg, again)
    assert C.load(Outer, again) == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "name: x\ninner: {widht: 8}\n")
    with pytest.raises(C.ConfigError, match=r"unknown key 'inner\.widht' in .*c\.yaml"):
        C.load(Outer, p)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("name: x\nlr: fast\n", "'lr'.*expected a number"),
        ("name: x\nflag: 1\n", "'flag'.*true/false"),
        ("name: x\ninner: {kind: rnn}\n", "'inner.kind'.*not one of"),
        ("name: x\nlayers: [1, two]\n", r"'layers\[1\]'.*integer"),
        ("lr: 1.0\n", "missing required key 'name'"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_mistyped_values_are_errors(tmp_path, text, pattern):
    with pytest.raises(C.ConfigError, match=pattern):
        C.load(Outer, write(tmp_path, text))


def test_overrides(tmp_path):
    p = write(tmp_path, "name: x\n")
    cfg = C.load(Outer, p, ["inner.width=64", "layers=[5]", "lr=1e-3", "flag=true"])
    assert cfg.inner.width == 64 and cfg.layers == (5,) and cfg.lr == 1e-3 and cfg.flag
    with pytest.raises(C.ConfigError, match="not of the form"):
        C.load(Outer, p, ["inner.width"])
    with pytest.raises(C.ConfigError, match="unknown key 'inner.depth'"):
        C.load(Outer, p, ["inner.depth=3"])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        C.load(Outer, tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(Outer, write(tmp_path, "name: [unclosed\n"))


def test_inference_only_dict_leaves_out_training_only_fields() -> None:
    @dataclass(frozen=True)
    class Inner:
        width: int = 4
        dropout: float = field(default=0.1, metadata=C.TRAINING_ONLY)

    @dataclass(frozen=True)
    class Outer:
        inner: Inner = field(default_factory=Inner)
        augment: bool = field(default=True, metadata=C.TRAINING_ONLY)

    assert C.to_dict(Outer()) == {"inner": {"width": 4, "dropout": 0.1}, "augment": True}
    assert C.to_dict(Outer(), inference_only=True) == {"inner": {"width": 4}}
