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
