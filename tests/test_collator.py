import inspect

import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

from hm_hf.data.collator import MemeCollator


def _tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "meme"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    return BertTokenizerFast(str(tmp_path / "vocab.txt"))


def _row(n, label, text="a cat"):
    rng = np.random.default_rng(n)
    return {
        "id": n,
        "text": text,
        "label": label,
        "region_features": rng.random((n, 2048)).astype(np.float16).tolist(),
        "boxes": [[0, 0, 200, 100]] * n,
        "image_width": 400,
        "image_height": 200,
    }


def test_pads_regions_with_a_mask_and_normalises_boxes(tmp_path):
    collator = MemeCollator(tokenizer=_tokenizer(tmp_path), use_regions=True)
    batch = collator([_row(2, 1), _row(4, 0, "a dog meme cat")])
    assert batch["visual_embeds"].shape == (2, 4, 2048)
    assert batch["visual_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert torch.all(batch["visual_embeds"][0, 2:] == 0)
    assert batch["visual_boxes"][0, 0].tolist() == [0.0, 0.0, 0.5, 0.5]  # x by width, y by height
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["labels"].tolist() == [1, 0]


def test_unlabelled_rows(tmp_path):
    collator = MemeCollator(tokenizer=_tokenizer(tmp_path))
    assert collator([_row(1, 1), _row(1, -1)])["labels"].tolist() == [1, -100]
    assert "labels" not in collator([_row(1, -1), _row(1, -1)])


def test_max_regions_and_text_embeddings(tmp_path):
    rows = [dict(_row(5, 0), text_embedding=[0.5] * 100)]
    batch = MemeCollator(use_regions=True, max_regions=3, text_embedding_column="text_embedding")(rows)
    assert batch["visual_embeds"].shape == (1, 3, 2048)
    assert batch["text_embedding"].shape == (1, 100) and "input_ids" not in batch


def test_float16_region_batches_and_every_region_model_accepts_them():
    """region_dtype="float16" (mixed-precision training) hands over the same values in half the bytes, and
    each model that reads regions gives the same logits from them as from float32 features."""
    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
    from hm_hf.models.uniter import HmUniterConfig, HmUniterForHatefulMemes
    from hm_hf.models.vilbert import HmVilbertConfig, HmVilbertForHatefulMemes
    from hm_hf.models.visual_bert import HmVisualBertConfig, HmVisualBertForHatefulMemes

    rng = np.random.default_rng(0)
    rows = [{"region_features": rng.standard_normal((n, 16)).astype(np.float16),
             "boxes": np.sort(rng.uniform(0, 40, (n, 4)), axis=1).astype(np.float32), "image_width": 64,
             "image_height": 48, "label": n % 2, "text_embedding": rng.standard_normal(8).astype(np.float32)}
            for n in (3, 7, 1)]
    full = MemeCollator(use_regions=True, text_embedding_column="text_embedding")(rows)
    half = MemeCollator(use_regions=True, text_embedding_column="text_embedding", region_dtype="float16")(rows)
    assert full["visual_embeds"].dtype == torch.float32 and half["visual_embeds"].dtype == torch.float16
    assert torch.equal(half["visual_embeds"].float(), full["visual_embeds"])
    with pytest.raises(ValueError, match="region_dtype"):
        MemeCollator(region_dtype="bfloat16")

    sizes = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20)
    torch.manual_seed(0)
    models = [
        HmVisualBertForHatefulMemes(HmVisualBertConfig(visual_embedding_dim=16, **sizes)),
        HmUniterForHatefulMemes(HmUniterConfig(img_dim=16, **sizes)),
        HmVilbertForHatefulMemes(HmVilbertConfig(v_feature_size=16, v_hidden_size=16, v_num_hidden_layers=1,
                                                 v_num_attention_heads=2, v_intermediate_size=20, bi_hidden_size=16,
                                                 bi_num_attention_heads=2, v_biattention_id=[1],
                                                 t_biattention_id=[1], **sizes)),
        HmConcatForHatefulMemes(HmConcatConfig(text_source="embedding", text_embedding_dim=8, image_source="regions",
                                               visual_embedding_dim=16)),
    ]
    text = {"input_ids": torch.tensor([[2, 5, 6], [2, 7, 0], [2, 0, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])}
    for model in models:
        model.eval()
        accepted = inspect.signature(model.forward).parameters
        with torch.no_grad():
            a = model(**{k: v for k, v in {**text, **full}.items() if k in accepted and k != "labels"}).logits
            b = model(**{k: v for k, v in {**text, **half}.items() if k in accepted and k != "labels"}).logits
        assert b.dtype == torch.float32, type(model).__name__
        torch.testing.assert_close(a, b, msg=type(model).__name__)


@pytest.mark.parametrize("change, message", [
    ({"boxes": [[0, 0, 200, 100]]}, r"boxes must be \(N, 4\) for the 3 regions"),  # one box broadcast over three
    ({"boxes": [0, 0, 200, 100]}, r"boxes must be \(N, 4\)"),
    ({"region_features": np.ones((3, 4, 2))}, r"region_features must be an \(N, D\) matrix"),
    ({"image_width": 0}, "image_width must be the image's size"),
    ({"image_height": None}, "image_height must be the image's size"),
    ({"boxes": [[float("nan"), 0, 1, 1]] * 3}, "boxes hold NaN or infinite"),
])
def test_malformed_region_rows_are_refused_naming_the_row(change, message):
    with pytest.raises(ValueError, match=f"row 3: {message}"):
        MemeCollator(use_regions=True)([{**_row(3, 1), **change}])


def test_rows_of_another_feature_width_are_refused():
    other = {**_row(2, 0), "id": 9, "region_features": np.ones((2, 16), np.float16)}
    with pytest.raises(ValueError, match="row 9: region_features are 16-d but the batch's are 2048-d"):
        MemeCollator(use_regions=True)([_row(3, 1), other])
    empty = {**_row(2, 0), "region_features": [], "boxes": []}  # no regions, as dataset[i] gives them
    assert MemeCollator(use_regions=True)([_row(3, 1), empty])["visual_attention_mask"].tolist() == [[1, 1, 1],
                                                                                                      [0, 0, 0]]


def test_features_given_as_lists_keep_their_float32_values():
    """`dataset[i]` gives a float32 feature cache's regions as lists: they are not rounded to float16 (which
    turns values past 65504 into inf)."""
    row = {"region_features": [[0.1, 70000.0], [1.5, -2.0]], "boxes": [[0, 0, 1, 1]] * 2, "image_width": 4,
           "image_height": 4}
    batch = MemeCollator(use_regions=True)([row])
    assert batch["visual_embeds"].dtype == torch.float32
    assert torch.equal(batch["visual_embeds"][0], torch.tensor(row["region_features"], dtype=torch.float32))
    half = {**row, "region_features": np.asarray([[0.1]], np.float16),
            "boxes": [[0, 0, 1, 1]]}
    assert MemeCollator(use_regions=True, region_dtype="float16")([half])["visual_embeds"].dtype == torch.float16
