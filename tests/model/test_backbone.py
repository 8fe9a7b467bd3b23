import time

import pytest
import torch

from speechlm.model.backbone import Backbone, BackboneConfig
from speechlm.model.slm import SLM, SLMConfig


def test_tiny_backbone_is_a_faithful_wrapper():
    """inputs_embeds -> decoder -> lm_head equals the wrapped model's own forward on ids."""
    torch.manual_seed(0)
    backbone = Backbone.build(BackboneConfig(), text_vocab_size=50).eval()
    assert (backbone.hidden_size, backbone.text_vocab_size) == (32, 50)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        ours = backbone.lm_head(backbone(backbone.embed_text(ids)).hidden)
        theirs = backbone.lm(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs)


def test_resizing_a_pretrained_vocabulary_keeps_its_rows(tmp_path):
    torch.manual_seed(0)
    Backbone.build(BackboneConfig(), text_vocab_size=40).lm.save_pretrained(tmp_path)
    small = Backbone.build(BackboneConfig(kind="hf_dir", path=str(tmp_path)), text_vocab_size=40)
    grown = Backbone.build(BackboneConfig(kind="hf_dir", path=str(tmp_path)), text_vocab_size=45)
    old, new = small.text_embedding.weight, grown.text_embedding.weight
    assert new.shape == (45, 32)
    torch.testing.assert_close(new[:40], old)
    assert grown.lm.get_output_embeddings().weight.data_ptr() == new.data_ptr()  # still tied
    # A tokenizer smaller than the pretrained table (Qwen2.5 pads its rows) keeps every row, but
    # the language head scores only the ids the tokenizer uses.
    padded = Backbone.build(BackboneConfig(kind="hf_dir", path=str(tmp_path)), 30)
    assert (padded.num_text_rows, padded.text_vocab_size) == (40, 30)
    hidden = torch.randn(2, 3, 32)
    with torch.no_grad():
        torch.testing.assert_close(padded.lm_head(hidden), padded.lm.lm_head(hidden)[..., :30])


def test_backbone_config_errors(tmp_path):
    with pytest.raises(ValueError, match="needs `path`"):
        BackboneConfig(kind="hf_dir")
    with pytest.raises(ValueError, match="not divisible by num_heads 5"):
        BackboneConfig(num_heads=5)
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        Backbone.build(BackboneConfig(kind="hf_dir", path=str(tmp_path)), 10)


@pytest.mark.slow
def test_smollm2_backbone_loads_offline_and_trains_as_an_slm():
    start = time.perf_counter()
    cfg = SLMConfig(backbone=BackboneConfig(kind="smollm2"), group_size=3)
    model = SLM(cfg, speech_vocab_size=3 * 1024 + 2, text_vocab_size=49152 + 5)
    seconds = time.perf_counter() - start
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    print(f"SmolLM2 SLM built in {seconds:.1f} s; backbone {backbone_params / 1e6:.1f}M params")
    lm = model.backbone.lm
    assert (lm.config.num_hidden_layers, lm.config.hidden_size) == (30, 576)
    assert 134e6 < backbone_params < 136e6
    assert model.text_vocab_size == 49152 + 5
    # The pretrained model still answers like an LLM through our wrapper: greedy next token of
    # "The capital of France is" (SmolLM2 tokenizer ids) must be " Paris".
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        logits = model.text_head(model.backbone(model.backbone.embed_text(ids)).hidden)
    assert int(logits[0, -1].argmax()) == 7042


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        backbone = Backbone.build(BackboneConfig(gradient_checkpointing=checkpointing), 50).train()
        ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(1))
        backbone.lm_head(backbone(backbone.embed_text(ids)).hidden).logsumexp(-1).sum().backward()
        grads.append(backbone.text_embedding.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])
