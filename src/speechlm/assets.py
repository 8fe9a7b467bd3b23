"""Where the repository's shipped assets live, and how paths to them resolve from anywhere.

Shipped checkpoints (``checkpoints/codec/*``, ``checkpoints/slm/default``) and configs refer to each
other by repository-relative paths (``tokenizer.checkpoint: checkpoints/codec/decoupled``). Such a
path is looked up from the working directory first -- so a user's own ``checkpoints/`` folder wins --
and then from the repository root, so ``speechlm tts`` works from any directory of an editable install.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository (configs/, checkpoints/)
DEFAULT_SLM = Path("checkpoints/slm/default")  # the shipped default model (study issue 7)


def resolve_asset(path: str | Path) -> Path:
    """``path`` itself when it exists (or is absolute); else the same relative path under the repository."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    in_repo = REPO_ROOT / path
    return in_repo if in_repo.exists() else path


def default_slm() -> Path | None:
    """The shipped default SLM folder, or None when this checkout has none."""
    path = resolve_asset(DEFAULT_SLM)
    return path if (path / "config.yaml").is_file() or (path / "checkpoints").is_dir() else None
