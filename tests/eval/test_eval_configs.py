"""Every YAML under configs/eval/ loads into its dataclass (unknown keys would be errors) and names its command."""

from pathlib import Path

import pytest

from speechlm import config
from speechlm.eval.calibrate import CalibrationConfig
from speechlm.eval.judges.adapt import AdaptConfig
from speechlm.eval.judges.config import JudgesConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"


@pytest.mark.parametrize("name, cls", [("judges.yaml", JudgesConfig), ("calibrate.yaml", CalibrationConfig), ("adapt.yaml", AdaptConfig)])
def test_eval_configs_load(name, cls):
    path = CONFIGS / name
    assert path.read_text().startswith("# ") and "speechlm" in path.read_text().splitlines()[0]
    cfg = config.load(cls, path)
    assert config.from_dict(cls, config.to_dict(cfg)) == cfg


def test_every_eval_yaml_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == ["adapt.yaml", "calibrate.yaml", "judges.yaml"]
