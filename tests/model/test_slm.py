import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import END, PAD, SPEECH_VOCAB, TEXT_VOCAB, make_batch, make_model

from speechlm.config import from_dict, to_dict
from speechlm.layout.speech import LayoutConfig, SpeechLayout
from speechlm.model.batch import IGNORE_INDEX
from speechlm.model.heads import SlotVocab
from speechlm.model.slm import SLMConfig


def assert_changed_only_from(before: torch.Tensor, after: torch.Tensor, t: int) -> None:
    """Positions < t identical (inf-aware), position t onward different."""
    torch.testing.assert_close(after[:, :t], before[:, :t])
    assert not torch.allclose(after[:, t:], before[:, t:], equal_nan=True)


def test_shapes_and_heads(model, batch):
    out = model(batch)
    b, s, g = batch.speech_ids.shape
    assert out.text_logits.shape == (b, s, model.text_vocab_size)
    assert out.speech_logits.shape == (b, s, g, SPEECH_VOCAB)
    assert set(out.losses) == {"text", "speech", "lm", "speech_slot_0", "speech_slot_1", "speech_slot_2"}
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("position", ["text", "speech"])
def test_causality(position):
    model = make_model()
    batch = make_batch(lengths=(12, 12))
    t = 3 if position == "text" else 8
    assert bool(batch.is_speech[0, t]) == (position == "speech")
    changed = dataclasses.replace(batch, input_ids=batch.input_ids.clone(), speech_ids=batch.speech_ids.clone())
    if position == "text":
        changed.input_ids[:, t] = (batch.input_ids[:, t] % 17) + 1
    else:
        changed.speech_ids[:, t, 0] = (batch.speech_ids[:, t, 0] + 1) % 8
    with torch.no_grad():
        before, after = model(batch), model(changed)
    assert_changed_only_from(before.text_logits, after.text_logits, t)
    assert_changed_only_from(before.speech_logits, after.speech_logits, t)


def test_loss_is_the_shifted_cross_entropy(model, batch):
    out = model(batch)
    text_logits, speech_logits = out.text_logits[:, :-1], out.speech_logits[:, :-1]
    text_targets, speech_targets = batch.text_labels[:, 1:], batch.speech_labels[:, 1:]
    text = F.cross_entropy(text_logits.reshape(-1, text_logits.shape[-1]), text_targets.reshape(-1))
    per_slot = [
        F.cross_entropy(speech_logits[:, :, g].reshape(-1, SPEECH_VOCAB), speech_targets[..., g].reshape(-1))
        for g in range(3)
    ]
    speech = torch.stack(per_slot).mean()  # §2.2: mean over the group
    torch.testing.assert_close(out.losses["text"], text)
    torch.testing.assert_close(out.losses["speech"], speech)
    torch.testing.assert_close(out.loss, 0.2 * text + 0.8 * speech)  # released-code weighting
    lean = model(batch, return_logits=False)  # heads only at supervised positions: same loss
    assert lean.text_logits is None and lean.speech_logits is None
    torch.testing.assert_close(lean.loss, out.loss)


@pytest.mark.parametrize(
    "group_size, fusion, head",
    [
        (3, "mlp", "linear"),  # the study's MTP default (App. E.1)
        (1, "mean", "linear"),  # NTP
        pytest.param(3, "mean", "mlp", marks=pytest.mark.slow),
        pytest.param(6, "linear", "transformer", marks=pytest.mark.slow),
    ],
)
def test_loss_falls_on_a_fixed_batch(group_size, fusion, head):
    model = make_model(group_size, fusion=fusion, head=head).train()
    batch = make_batch(group_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        loss = model(batch, return_logits=False).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first, (first, loss.item())


def test_speaker_changes_outputs_only_after_the_placeholder():
    model = make_model(speaker_dim=4)
    batch = make_batch(speaker_dim=4, lengths=(12, 12), speaker_pos=2)
    other = dataclasses.replace(batch, speaker=batch.speaker + 1.0)
    with torch.no_grad():
        before, after = model(batch), model(other)
    assert_changed_only_from(before.text_logits, after.text_logits, 2)
    assert_changed_only_from(before.speech_logits, after.speech_logits, 2)


def test_embed_and_heads_work_one_position_at_a_time(model, batch):
    """What a KV-cached generator does must reproduce the training forward exactly."""
    batch = make_batch(lengths=(12, 12))
    with torch.no_grad():
        full = model(batch)
        x = model.embed(batch.input_ids, batch.speech_ids, batch.is_speech)
        state = model.backbone(x[:, :5], use_cache=True)
        hidden = [state.hidden]
        for s in range(5, x.shape[1]):
            state = model.backbone(x[:, s : s + 1], past_key_values=state.past_key_values, use_cache=True)
            hidden.append(state.hidden)
        hidden = torch.cat(hidden, dim=1)
    torch.testing.assert_close(model.text_head(hidden), full.text_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.speech_head(hidden[:, -1]), full.speech_logits[:, -1], atol=1e-5, rtol=1e-4)


def test_config_round_trips_through_yaml_dicts():
    cfg = SLMConfig(group_size=6, fusion="linear", head="mlp", speaker_dim=256)
    assert from_dict(SLMConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown key 'heads'"):
        from_dict(SLMConfig, {"heads": "linear"})
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        SLMConfig(group_size=0)


def _bad(batch, **changes):
    return dataclasses.replace(batch, **changes)


def test_bad_batches_get_clear_errors(batch):
    model = make_model()
    with pytest.raises(ValueError, match="G=6 but SLMConfig.group_size=3"):
        model(make_batch(group_size=6))
    ids = batch.input_ids.clone()
    ids[0, 0] = TEXT_VOCAB + 5
    with pytest.raises(ValueError, match=rf"input_ids holds id {TEXT_VOCAB + 5} outside \[0, {TEXT_VOCAB}\)"):
        model(_bad(batch, input_ids=ids))
    labels = batch.speech_labels.clone()
    labels[0, 8, 1] = 2  # a stream-0 code in slot 1 (stream 1)
    with pytest.raises(ValueError, match=r"speech_labels\[0, 8, 1\] = 2 is outside the stream vocabulary slot 1"):
        model(_bad(batch, speech_labels=labels))
    text_labels = batch.text_labels.clone()
    text_labels[0, 8] = 3
    with pytest.raises(ValueError, match="text_labels has a label at a speech position"):
        model(_bad(batch, text_labels=text_labels))
    with pytest.raises(ValueError, match="speaker_dim=0"):
        model(_bad(batch, speaker=torch.randn(2, 4)))


def test_speaker_errors():
    model = make_model(speaker_dim=4)
    batch = make_batch(speaker_dim=4)
    with pytest.raises(ValueError, match="batch has no speaker"):
        model(_bad(batch, speaker=None))
    with pytest.raises(ValueError, match="Ds=3, the model expects 4"):
        model(_bad(batch, speaker=torch.randn(2, 3)))
    mask = batch.speaker_mask.clone()
    mask[1] = False
    with pytest.raises(ValueError, match="row 1 has a speaker vector but no speaker placeholder"):
        model(_bad(batch, speaker_mask=mask))


def test_batch_shape_errors(batch):
    with pytest.raises(ValueError, match=r"speech_labels has shape \[2, 12, 2\], expected \[2, 12, 3\]"):
        _bad(batch, speech_labels=batch.speech_labels[..., :2])
    with pytest.raises(ValueError, match="must be bool"):
        _bad(batch, is_speech=batch.is_speech.long())


def test_end_and_pad_are_targets_of_every_slot(model, batch):
    last = batch.speech_labels[0, 11]
    assert last.tolist() == [END, PAD, PAD] and IGNORE_INDEX not in last.tolist()
    assert torch.isfinite(model(batch).speech_logits[..., [END, PAD]]).all()


@pytest.mark.parametrize("head", ["linear", "mlp", "transformer"])
def test_text_only_batch_keeps_speech_parameters_in_the_graph(batch, head):
    """No speech anywhere: speech loss is an exact 0 (not NaN) and speech parameters still get
    (zero) gradients, so DDP finds every parameter used on every rank."""
    model = make_model(head=head)
    text_only = dataclasses.replace(
        batch,
        is_speech=torch.zeros_like(batch.is_speech),
        speech_labels=torch.full_like(batch.speech_labels, IGNORE_INDEX),
        text_labels=batch.input_ids.where(batch.attention_mask.bool(), IGNORE_INDEX),
    )
    out = model(text_only, return_logits=False)
    out.loss.backward()
    assert out.losses["speech"].item() == 0.0 and torch.isfinite(out.loss)
    for name, param in model.named_parameters():
        assert param.grad is not None, name
    assert model.speech_head.weight.grad.abs().sum() == 0


def test_bf16_autocast_training_step_is_finite(batch):
    """The recipes' mixed precision (runtime.autocast): -inf slot masking must not turn into NaN."""
    model = make_model(head="mlp").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isinf(out.speech_logits).any()  # masked slots survive the low-precision matmuls
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def ntp_fwi_model_and_batch():
    """NTP over K=3 streams, frame-wise: speech steps cycle p, c0, c1 (stream = step % 3)."""
    layout = SpeechLayout(LayoutConfig(streams=(0, 1, 2), order="fwi", group_size=1), (8, 8, 8), ("p", "c0", "c1"))
    model = make_model(1, fusion="mean", slots=SlotVocab.from_layout(layout, 1))
    batch = make_batch(group_size=1, lengths=(12, 10))
    steps = batch.speech_steps()
    ids = batch.speech_ids.clone()
    cycled = ids[..., 0] % 8 + (steps % 3) * 8
    ids[..., 0] = torch.where(batch.is_speech & (ids[..., 0] != END), cycled, ids[..., 0])
    labels = ids.where(batch.is_speech.unsqueeze(-1), IGNORE_INDEX)
    return model, dataclasses.replace(batch, speech_ids=ids, speech_labels=labels), layout


def test_ntp_fwi_predictions_are_masked_to_the_next_steps_stream():
    model, batch, layout = ntp_fwi_model_and_batch()
    steps = batch.speech_steps()
    assert steps[0].tolist() == [-1] * 6 + [0, 1, 2, 3, 4, 5]
    out = model(batch)
    for s in range(5, 11):  # hidden s predicts speech position s+1 (step s-5): its stream's slice + END/PAD
        assert torch.equal(torch.isfinite(out.speech_logits[0, s]), layout.allowed_mask(s - 5)), s
    torch.testing.assert_close(model(batch, return_logits=False).loss, out.loss)
    labels = batch.speech_labels.clone()
    labels[0, 7, 0] = 0  # a prosody code where the step carries content stream 0
    with pytest.raises(ValueError, match=r"speech_labels\[0, 7, 0\] = 0 is outside the stream vocabulary"):
        model(dataclasses.replace(batch, speech_labels=labels))
