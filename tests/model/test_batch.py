import torch
from conftest import make_batch

from speechlm.model.batch import SLMBatch


def test_speech_steps_restart_after_every_text_position():
    batch = make_batch(lengths=(7, 7))
    is_speech = torch.tensor([[False, True, True, False, True, True, True], [True, True, False, False, True, False, True]])
    steps = SLMBatch(**{**batch.__dict__, "is_speech": is_speech}).speech_steps()
    assert steps.tolist() == [[-1, 0, 1, -1, 0, 1, 2], [0, 1, -1, -1, 0, -1, 0]]


def test_to_device_keeps_every_field():
    batch = make_batch(speaker_dim=4)
    moved = batch.to("cpu")
    for name in ("input_ids", "speech_ids", "is_speech", "attention_mask", "text_labels", "speech_labels", "speaker"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    assert moved.ids == batch.ids
