"""Shipped-asset paths: the working directory wins, the repository is the fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechlm import assets


def test_default_slm_is_found_from_the_working_directory_then_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(assets, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    assert assets.default_slm() is None
    (tmp_path / assets.DEFAULT_SLM).mkdir(parents=True)
    assert assets.default_slm() is None  # an empty folder is not a model
    (tmp_path / assets.DEFAULT_SLM / "config.yaml").write_text("{}")
    assert assets.default_slm() == assets.DEFAULT_SLM
    (tmp_path / "repo" / assets.DEFAULT_SLM).mkdir(parents=True)
    (tmp_path / "repo" / assets.DEFAULT_SLM / "config.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path / assets.DEFAULT_SLM)  # somewhere without its own checkpoints/
    assert assets.default_slm() == tmp_path / "repo" / assets.DEFAULT_SLM


def test_resolve_asset_prefers_existing_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(assets, "REPO_ROOT", tmp_path / "repo")
    (tmp_path / "repo" / "checkpoints" / "codec" / "x").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert assets.resolve_asset("checkpoints/codec/x") == tmp_path / "repo" / "checkpoints/codec/x"
    assert assets.resolve_asset("nowhere/y") == Path("nowhere/y")  # left for the caller's not-found error
    (tmp_path / "here" / "checkpoints" / "codec" / "x").mkdir(parents=True)
    assert assets.resolve_asset("checkpoints/codec/x") == Path("checkpoints/codec/x")
