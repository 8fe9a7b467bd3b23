"""Where does each speech step look in its sentence? Teacher-forced attention of an SLM's heads, speech over text.

    .venv/bin/python scripts/plot_attention.py CKPT --data DIR --out OUT.png [--json OUT.json] [--items 4]
    e.g. scripts/plot_attention.py runs/slm/large_guided/checkpoints/step_006000 --data data/large --out attn.png

For test-split TTS rows (an even stride over the voices), every head's attention from the speech positions to the
sentence's characters (`SLMBatch.aligned_text`). The JSON scores each (layer, head) by its guided-attention charge
(`speechlm.model.guided`: 0 = on the speech<->text diagonal, 1 = nowhere on the sentence) and by its mass on the
sentence; the PNG shows the most diagonal head on ``--items`` utterances. Works for any checkpoint: the backbone is
switched to eager attention, which returns the weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import torch

from speechlm.data.dataset import collate
from speechlm.data.manifest import Corpus, spread
from speechlm.eval.model_alignment import eval_code_cache
from speechlm.eval.text_gain import example_maker
from speechlm.train.checkpoint import load_slm
from speechlm.model.guided import diagonal_penalty

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@torch.inference_mode()
def head_scores(ckpt: str, data: str, items: int) -> tuple[dict, list[tuple[str, torch.Tensor]]]:
    loaded = load_slm(ckpt, device=torch.device("cpu"))
    loaded.model.backbone.lm.set_attn_implementation("eager")
    corpus = Corpus.open(data)
    rows = spread(corpus.tts("test"), 32)
    encode = example_maker(loaded, corpus, eval_code_cache(loaded, corpus, "test"))
    examples = [encode(r, r.text, r, "tts") for r in rows]
    pad = dict(text_pad_id=loaded.text_tokenizer.pad_id, speech_pad_id=loaded.layout.vocab.pad_id)
    batch = collate(examples, **pad)
    model = loaded.model.eval()
    x = model.embed(batch.input_ids, batch.speech_ids, batch.is_speech, batch.speaker, batch.speaker_mask)
    attn = model.backbone(x, attention_mask=batch.attention_mask, output_attentions=True).attentions  # L x [B,H,S,S]
    assert attn is not None and batch.aligned_text is not None
    charge, queries = diagonal_penalty(batch.aligned_text, batch.is_speech, sigma=0.2)
    scores = []
    for layer, a in enumerate(attn):
        charged = (a * charge[:, None]).sum(-1)  # [B,H,S]
        on_text = (a * batch.aligned_text[:, None, None, :]).sum(-1)  # [B,H,S]
        for head in range(a.shape[1]):
            scores.append(
                {
                    "layer": layer,
                    "head": head,
                    "charge": float(charged[:, head][queries].mean()),
                    "mass_on_sentence": float(on_text[:, head][queries].mean()),
                }
            )
    best = min(scores, key=lambda s: s["charge"])
    maps = []
    for b in range(min(items, len(examples))):
        q, k = queries[b].nonzero().flatten(), batch.aligned_text[b].nonzero().flatten()
        maps.append((rows[b].text, attn[best["layer"]][b, best["head"]][q][:, k]))
    record = {"checkpoint": str(loaded.path), "items": len(examples), "best": best, "heads": scores}
    return record, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="PNG")
    parser.add_argument("--json", help="per-head scores")
    parser.add_argument("--items", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record, maps = head_scores(args.checkpoint, args.data, args.items)
    best = record["best"]
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.6), squeeze=False)
    for ax, (text, m) in zip(axes[0], maps):
        ax.imshow(m.T.numpy(), origin="lower", aspect="auto", cmap="viridis")
        ax.set(xlabel="speech step", ylabel="character", title=text if len(text) < 40 else text[:37] + "...")
        ax.title.set_fontsize(8)
    fig.suptitle(f"{Path(record['checkpoint']).name}: layer {best['layer']} head {best['head']} (charge {best['charge']:.2f})")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    for s in sorted(record["heads"], key=lambda s: s["charge"])[:6]:
        print(f"layer {s['layer']} head {s['head']}: charge {s['charge']:.3f}, mass on sentence {s['mass_on_sentence']:.3f}")


if __name__ == "__main__":
    main()
