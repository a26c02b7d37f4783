"""The stance head: shapes, masking, and that it leaves the post-level heads alone. A tiny random
BERT stands in for MiniLM (the head does not care what the encoder learned)."""

from __future__ import annotations

import pytest
import torch

from scorer.training.modeling import STANCE_POOLINGS, SentimentModel


def _model(pooling: str | None) -> SentimentModel:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = SentimentModel(BertModel(config, add_pooling_layer=False), stance_pooling=pooling)
    return model.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 10, 2, 0, 0]])
    mask = (ids != 0).long()
    targets = torch.zeros((2, 3, 6))
    targets[0, 0, 1] = 1.0  # row 0: two tickers, one of them mentioned twice
    targets[0, 1, 3] = targets[0, 1, 4] = 1.0
    targets[1, 0, 2] = 1.0  # row 1: one ticker; targets 1 and 2 of row 1 (and 2 of row 0) are padding
    return ids, mask, targets


@pytest.mark.parametrize("pooling", STANCE_POOLINGS)
def test_shapes(pooling: str) -> None:
    model = _model(pooling)
    ids, mask, targets = _batch()
    with torch.no_grad():
        pol, emo, stance = model.forward_targets(ids, mask, torch.zeros_like(ids), targets)
    assert pol.shape == (2, 3) and emo.shape == (2, 7) and stance.shape == (2, 3, 3)


@pytest.mark.parametrize("pooling", STANCE_POOLINGS)
def test_targets_do_not_see_each_other(pooling: str) -> None:
    # Moving, adding or dropping one ticker's mention mask leaves every other ticker's logits alone.
    model = _model(pooling)
    ids, mask, targets = _batch()
    types = torch.zeros_like(ids)
    with torch.no_grad():
        _, _, before = model.forward_targets(ids, mask, types, targets)
        changed = targets.clone()
        changed[0, 1] = 0.0
        changed[0, 1, 5] = 1.0
        _, _, after = model.forward_targets(ids, mask, types, changed)
        _, _, fewer = model.forward_targets(ids, mask, types, targets[:, :1])
    torch.testing.assert_close(after[0, 0], before[0, 0])
    torch.testing.assert_close(after[1], before[1])
    assert not torch.allclose(after[0, 1], before[0, 1])
    torch.testing.assert_close(fewer[:, 0], before[:, 0])


@pytest.mark.parametrize("pooling", STANCE_POOLINGS)
def test_padding_tokens_change_nothing(pooling: str) -> None:
    # Row 1 padded further with arbitrary ids under attention mask 0: same stance.
    model = _model(pooling)
    ids, mask, targets = _batch()
    wide = torch.cat([ids, torch.tensor([[3, 4], [11, 12]])], dim=1)
    wide_mask = torch.cat([mask, torch.tensor([[1, 1], [0, 0]])], dim=1)
    wide_targets = torch.cat([targets, torch.zeros((2, 3, 2))], dim=2)
    with torch.no_grad():
        _, _, narrow = model.forward_targets(ids, mask, torch.zeros_like(ids), targets)
        _, _, padded = model.forward_targets(wide, wide_mask, torch.zeros_like(wide), wide_targets)
    torch.testing.assert_close(padded[1, 0], narrow[1, 0], rtol=1e-4, atol=1e-5)


def test_span_pooling_reads_only_the_mention_tokens_and_the_sentence() -> None:
    # "span" pooling: the same mention token states and sentence vector give the same logits,
    # wherever the mention sits; a different mention gives different ones.
    model = _model("span")
    assert model.stance_head is not None
    states = torch.randn(1, 5, 16)
    attention = torch.ones(1, 5, dtype=torch.long)
    sentence = states.mean(dim=1)
    at_1 = torch.zeros(1, 2, 5)
    at_1[0, 0, 1] = 1.0
    at_1[0, 1, 3] = 1.0
    swapped = states.clone()
    swapped[0, [1, 3]] = states[0, [3, 1]]
    with torch.no_grad():
        a = model.stance_head(states, attention, sentence, at_1)
        b = model.stance_head(swapped, attention, sentence, at_1)
    torch.testing.assert_close(a[0, 0], b[0, 1])
    torch.testing.assert_close(a[0, 1], b[0, 0])
    assert not torch.allclose(a[0, 0], a[0, 1])


def test_post_heads_are_the_same_with_or_without_targets() -> None:
    model = _model("span_attention")
    ids, mask, targets = _batch()
    types = torch.zeros_like(ids)
    with torch.no_grad():
        pol, emo = model(ids, mask, types)
        pol_t, emo_t, _ = model.forward_targets(ids, mask, types, targets)
    torch.testing.assert_close(pol, pol_t)
    torch.testing.assert_close(emo, emo_t)


def test_no_stance_head() -> None:
    model = _model(None)
    ids, mask, targets = _batch()
    assert model.stance_head is None and model.stance_pooling is None
    with pytest.raises(ValueError, match="no stance head"):
        model.forward_targets(ids, mask, torch.zeros_like(ids), targets)
    with pytest.raises(ValueError, match="stance pooling"):
        _model("max")


def test_distance_to_the_nearest_mention_token() -> None:
    from scorer.training.modeling import _distance_to_mentions

    mask = torch.zeros((1, 2, 7))
    mask[0, 0, [1, 5]] = 1.0  # a ticker mentioned twice
    distance = _distance_to_mentions(mask)
    assert distance[0, 0].tolist() == [1, 0, 1, 2, 1, 0, 1]
    assert (distance[0, 1] >= 1024).all()  # no mention: far from everything


def test_local_pooling_reads_the_words_near_each_mention() -> None:
    # Changing a word next to one ticker moves that ticker's logits more than the other's.
    model = _model("local")
    ids = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 2]])
    mask = torch.ones_like(ids)
    targets = torch.zeros((1, 2, 16))
    targets[0, 0, 2] = 1.0
    targets[0, 1, 13] = 1.0
    changed = ids.clone()
    changed[0, 3] = 40  # right after the first ticker, 10 tokens from the second
    types = torch.zeros_like(ids)
    with torch.no_grad():
        _, _, before = model.forward_targets(ids, mask, types, targets)
        _, _, after = model.forward_targets(changed, mask, types, targets)
    moved = (after - before).abs().sum(-1)[0]
    assert moved[0] > 2 * moved[1]
