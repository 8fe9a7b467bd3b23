"""Speaker-aware conditioning (paper §2.3, Eq. 5; prompt of Appendix G.3).

A continuous timbre vector of the target speaker (FACodec's timbre extractor in the study, App. B;
any speaker encoder here) is projected into the LM width and *replaces* the embedding of the
speaker placeholder token in the prompt ("You should speak like: <|spk_emb|>"), so the whole
context after it -- text answer and speech answer -- is generated conditioned on that voice.
The projector is the released code's MLP: Ds -> 4*Ds -> SiLU -> D.
"""

from __future__ import annotations

from torch import Tensor, nn


class SpeakerProjector(nn.Module):
    """[B,Ds] speaker vectors -> [B,D] LM input vectors."""

    def __init__(self, speaker_dim: int, dim: int, hidden: int = 0) -> None:
        super().__init__()
        if speaker_dim <= 0 or dim <= 0:
            raise ValueError(f"speaker_dim and dim must be positive, got {speaker_dim} and {dim}")
        self.speaker_dim = speaker_dim
        hidden = hidden or 4 * speaker_dim
        self.net = nn.Sequential(nn.Linear(speaker_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, speaker: Tensor) -> Tensor:
        return self.net(speaker)

    def inject(self, embeds: Tensor, speaker: Tensor, mask: Tensor) -> Tensor:
        """Replace ``embeds`` [B,S,D] at placeholder positions ``mask`` [B,S] by the projected ``speaker`` [B,Ds]."""
        projected = self(speaker).to(embeds.dtype)  # [B,D]
        return embeds.where(~mask.unsqueeze(-1), projected.unsqueeze(1))
