"""The hm_hf files of a model folder, read at load time (processor_config.json, decision_policy.json, an older
folder's hm_hf_pipeline.json, the fastText model's record, the adapters' adapter_config.json): hostile or
damaged files and values out of range are named errors at load time (the file, what is wrong, what to do),
never a traceback or a garbage prediction later."""

from __future__ import annotations

import json

import pytest
from hostile import deep_json  # tests/hostile.py

from hm_hf.metrics.policy import POLICY_FILE, DecisionPolicy
from hm_hf.processing import PROCESSOR_CONFIG_NAME, MemeProcessor
from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME

BROKEN = {
    "truncated": b'{"model_inputs": ["regions"], "max_regi',
    "deep": deep_json().encode(),
    "not_utf8": b'{"ocr_lang": "\xff\xfe"}',
    "huge_int": b'{"max_regions": ' + b"9" * 5000 + b"}",
    "not_an_object": b'["regions"]',
}
REASONS = {"truncated": "invalid JSON", "deep": "nested too deeply", "not_utf8": "not UTF-8",
           "huge_int": "unusable JSON value", "not_an_object": "expected a JSON object"}


def _config():
    from hm_hf.models.concat import HmConcatConfig

    return HmConcatConfig(modalities=["image"])


def _load_processor(folder):
    return MemeProcessor.from_pretrained(folder, _config())


def _load_policy(folder):
    return DecisionPolicy.from_pretrained(folder)


def _load_fasttext_record(folder):
    from hm_hf.text.fasttext_embeddings import _read_metadata

    return _read_metadata(folder / "fasttext.bin")


def _load_adapters(folder):
    from hm_hf.inference.model_loading import load_trained_model

    return load_trained_model(str(folder))


FILES = {  # file -> how loading a model reads it
    PROCESSOR_CONFIG_NAME: _load_processor,
    POLICY_FILE: _load_policy,
    PIPELINE_CONFIG_NAME: _load_processor,
    "fasttext.bin.json": _load_fasttext_record,
    "adapter_config.json": _load_adapters,
}


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_damaged_json_file_is_a_named_error(tmp_path, name, how):
    (tmp_path / name).write_bytes(BROKEN[how])
    with pytest.raises(ValueError) as info:
        FILES[name](tmp_path)
    message = str(info.value)
    assert str(tmp_path / name) in message and REASONS[how] in message, message
    assert any(what in message for what in ("delete it", "save", "again", "fix it")), message  # what to do


POLICY_VALUES = [  # decision_policy.json value -> what the error says
    ("threshold", float("nan"), "threshold"),
    ("threshold", float("-inf"), "between 0 and 1"),
    ("threshold", 1.5, "between 0 and 1"),
    ("threshold", -0.1, "between 0 and 1"),
    ("threshold", True, "threshold"),
    ("threshold", "0.5", "threshold"),
    ("temperature", 0.0, "temperature must be"),
    ("temperature", -1.0, "temperature must be"),
    ("temperature", float("inf"), "temperature must be"),
    ("temperature", float("nan"), "temperature must be"),
    ("rule", 5, "rule"),
    ("fitted_on", ["dev_seen"], "fitted_on"),
    ("num_labels", "2", "num_labels"),
    ("metrics", [1, 2], "metrics"),
    ("metrics", {"f1": "high"}, "metrics"),
]


@pytest.mark.parametrize("key,value,says", POLICY_VALUES, ids=[f"{k}={v!r}" for k, v, _ in POLICY_VALUES])
def test_decision_policy_values_are_checked_when_loaded(tmp_path, key, value, says):
    data = {**DecisionPolicy(threshold=0.3, rule="max_f1").to_dict(), key: value}
    (tmp_path / POLICY_FILE).write_text(json.dumps(data))  # (json writes NaN / Infinity, as Python's json reads)
    with pytest.raises(ValueError, match=says) as info:
        DecisionPolicy.from_pretrained(tmp_path)
    assert str(tmp_path / POLICY_FILE) in str(info.value)


def test_a_threshold_of_infinity_flags_nothing(tmp_path):
    """What training writes when a rule is met only by flagging nothing (choose_threshold warns then)."""
    DecisionPolicy(threshold=float("inf"), rule="fpr@0.01").save_pretrained(tmp_path)
    assert DecisionPolicy.from_pretrained(tmp_path).decide([[0.0, 50.0]]).tolist() == [0]
    for by_hand in (float("inf"), float("nan"), 1.5, -0.2, "0.3", True):  # a threshold set by hand is a probability
        with pytest.raises(ValueError, match="between 0 and 1"):
            DecisionPolicy().with_threshold(by_hand)


PROCESSOR_VALUES = [  # processor_config.json value -> what the error says
    ("max_text_length", -1, "max_text_length"),
    ("max_text_length", 0, "max_text_length"),
    ("max_text_length", "128", "max_text_length"),
    ("max_text_length", 10**30, r"from 1 to 2\*\*31 - 1"),  # once an OverflowError at the first long text
    ("max_regions", -5, "max_regions"),
    ("max_regions", 2.5, "max_regions"),
    ("max_pixels", 0, "max_pixels"),
    ("ocr_engine", "easyocr", "unknown OCR engine 'easyocr'"),
    ("ocr_lang", "", "ocr_lang"),
    ("ocr_lang", 7, "ocr_lang"),
    ("label_names", "hateful", "label_names"),
    ("label_names", ["hateful", 1], "label_names"),
    ("label_names", ["hateful", "hateful"], "label_names"),
    ("text_column", None, "text_column"),
    ("text_pair_column", 3, "text_pair_column"),
    ("detector_settings", [1], "detector_settings"),
    ("multi_label", "no", "multi_label"),
    ("trained_on_synthetic_data", 1, "trained_on_synthetic_data"),
    ("fasttext_lowercase", "yes", "fasttext_lowercase"),
    ("model_inputs", "regions", "model_inputs"),
]


@pytest.mark.parametrize("key,value,says", PROCESSOR_VALUES, ids=[f"{k}={v!r}" for k, v, _ in PROCESSOR_VALUES])
def test_processor_values_are_checked_when_loaded(tmp_path, key, value, says):
    data = {**MemeProcessor(model_inputs=("regions",), detector="synthetic").to_dict(), key: value}
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=says) as info:
        _load_processor(tmp_path)
    assert str(tmp_path / PROCESSOR_CONFIG_NAME) in str(info.value)


def test_label_names_and_policy_must_fit_the_model(tmp_path):
    """label_names of the wrong length for the model's head, or a decision policy of another model's label
    count, are refused when the model is loaded (not a wrong label name or a failure at the first meme)."""
    from hm_hf.models.concat import HmConcatConfig

    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(
        {**MemeProcessor(model_inputs=("regions",), detector="synthetic").to_dict(), "label_names": ["a", "b", "c"]}))
    with pytest.raises(ValueError, match=r"3 label_names .* 2 labels") as info:
        _load_processor(tmp_path)
    assert str(tmp_path / PROCESSOR_CONFIG_NAME) in str(info.value)
    multi = HmConcatConfig(modalities=["image"], num_labels=4, problem_type="multi_label_classification")
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(
        {**MemeProcessor(model_inputs=("regions",), detector="synthetic", multi_label=True,
                         label_names=["a", "b", "c"]).to_dict()}))
    with pytest.raises(ValueError, match=r"3 label_names .* 4 labels"):
        MemeProcessor.from_pretrained(tmp_path, multi)
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(
        MemeProcessor(model_inputs=("regions",), detector="synthetic").to_dict()))
    DecisionPolicy.neutral(6).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"decision_policy.json.* 6 labels .* 2") as info:
        _load_processor(tmp_path)


def test_max_text_length_is_cut_to_the_models_text_positions(tmp_path, caplog):
    """More tokens than the text encoder has positions fail inside the model at the first long meme."""
    from transformers import BertConfig

    from hm_hf.models.concat import HmConcatConfig

    config = HmConcatConfig(text_source="encoder", text_config=BertConfig(max_position_embeddings=40, hidden_size=8,
                                                                          num_hidden_layers=1, num_attention_heads=2,
                                                                          intermediate_size=8))
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps(
        {**MemeProcessor(model_inputs=("regions",), detector="synthetic").to_dict(), "max_text_length": 128,
         "model_inputs": ["text", "regions"]}))
    from hm_hf.text.tokenizer import train_wordpiece_tokenizer

    train_wordpiece_tokenizer(["a meme text", "another one"] * 5, tmp_path / "tok", vocab_size=60).save_pretrained(
        tmp_path)  # beside the settings, as training saves it
    processor = MemeProcessor.from_pretrained(tmp_path, config)
    assert processor.max_text_length == 40 and "texts are cut at 40 tokens" in caplog.text


def test_the_fasttext_record_comes_with_the_model_from_a_hub_repo(tmp_path, monkeypatch):
    """hf_hub_download fetches one file at a time: the fastText model's record (fasttext.bin.json: trained on
    lowercased text) must be fetched too, else a Hub model embeds its text with the wrong casing."""
    import shutil

    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from hm_hf.text import fasttext_embeddings

    remote, cache = tmp_path / "remote", tmp_path / "cache"
    (remote / "fasttext").mkdir(parents=True)
    (remote / "fasttext" / "fasttext.bin").write_bytes(b"fastText model bytes")
    (remote / "fasttext" / "fasttext.bin.json").write_text(json.dumps({"lowercase": True}))
    (remote / PROCESSOR_CONFIG_NAME).write_text(json.dumps(
        {"processor_class": "MemeProcessor", "model_inputs": ["text_embedding", "regions"], "detector": "synthetic"}))

    def hf_hub_download(repo_id, filename, revision=None, **_):  # one file, as the Hub client does
        if repo_id != "org/fasttext-model" or not (remote / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        (cache / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote / filename, cache / filename)
        return str(cache / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(fasttext_embeddings, "load_fasttext", lambda path: f"fastText from {path}")
    from hm_hf.models.concat import HmConcatConfig

    processor = MemeProcessor.from_pretrained("org/fasttext-model", HmConcatConfig())
    assert processor.fasttext == f"fastText from {cache / 'fasttext' / 'fasttext.bin'}"
    assert processor.fasttext_lowercase is True
