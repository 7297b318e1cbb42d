"""MemeProcessor: what each model reads (declared by its config), processor_config.json round trips (also through
AutoProcessor), older folders' hm_hf_pipeline.json, the detector settings recorded with the features, and the
fastText model travelling with the processor."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from hm_hf.pipeline import HatefulMemePipeline
from hm_hf.processing import INPUT_KINDS, PROCESSOR_CONFIG_NAME, MemeProcessor, detector_for_features, model_inputs
from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME, save_pipeline_config

from test_pipeline import build_tiny_model, make_data, tiny_frcnn  # tests/test_pipeline.py


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory):
    """A model folder in the format before processor_config.json: model, tokenizer, hm_hf_pipeline.json."""
    root = tmp_path_factory.mktemp("processing")
    memes = make_data(root, n_train=12, n_dev=4)
    build_tiny_model(root / "model", [m.text for split in memes.values() for m in split])
    return root


def test_every_config_declares_what_it_reads():
    from hm_hf.models.auto import ARCHITECTURES, config_class
    from hm_hf.models.concat import HmConcatConfig

    for model_type in ARCHITECTURES:
        inputs = model_inputs(config_class(model_type)())
        assert inputs and set(inputs) <= set(INPUT_KINDS), model_type
    assert model_inputs(HmConcatConfig()) == ("text_embedding", "regions")
    assert model_inputs(HmConcatConfig(modalities=["image"])) == ("regions",)
    with pytest.raises(TypeError, match="does not declare model_inputs"):
        model_inputs(object())


def test_new_format_round_trip_and_auto_processor(old_folder, tmp_path):
    old = HatefulMemePipeline.from_pretrained(old_folder / "model", device="cpu")
    assert not (old_folder / "model" / PROCESSOR_CONFIG_NAME).exists()  # it read hm_hf_pipeline.json
    old.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / PROCESSOR_CONFIG_NAME).read_text())
    assert saved["processor_class"] == "MemeProcessor" and saved["model_inputs"] == ["text", "regions"]
    assert saved["detector"] == "synthetic" and saved["max_text_length"] == 32
    assert not (tmp_path / "new" / PIPELINE_CONFIG_NAME).exists()
    new = HatefulMemePipeline.from_pretrained(tmp_path / "new", device="cpu")
    assert new.processor.to_dict() == old.processor.to_dict()
    image = Image.open(old_folder / "data" / "img" / "00013.png")
    assert new(image, texts="a caption")["probability"] == pytest.approx(old(image, texts="a caption")["probability"],
                                                                         abs=1e-6)
    auto = AutoProcessor.from_pretrained(tmp_path / "new")
    assert isinstance(auto, MemeProcessor) and auto.to_dict() == old.processor.to_dict()
    rows = [{"text": "a caption", "label": 1, **auto.region_fields(new.detector.extract([image])[0])}]
    for key, value in auto(rows).items():
        assert torch.equal(value, new.processor(rows)[key]), key


def test_old_settings_become_processor_settings(old_folder, tmp_path):
    from hm_hf.models.concat import HmConcatForHatefulMemes

    folder = tmp_path / "old"
    config = HmConcatForHatefulMemes.config_class.from_pretrained(old_folder / "model")
    save_pipeline_config(folder, detector="detector", detector_max_boxes=5, detector_min_size=64, text_pair=True,
                         max_regions=16, ocr_lang="eng+deu")
    processor = MemeProcessor.from_pretrained(folder, config, tokenizer=object(), max_regions=8)
    assert processor.detector == "detector" and processor.detector_settings == {"max_boxes": 5, "min_size_test": 64}
    assert processor.text_pair_column == "text_pair" and processor.ocr_lang == "eng+deu"
    assert processor.max_regions == 8  # an argument overrides the file
    merged = MemeProcessor.from_pretrained(folder, config, tokenizer=object(), detector_score_threshold=0.3)
    assert merged.detector_settings == {"max_boxes": 5, "min_size_test": 64, "score_threshold": 0.3}
    with pytest.raises(ValueError, match="unknown pipeline setting"):
        MemeProcessor.from_pretrained(folder, config, tokenizer=object(), max_region=8)


def test_broken_processor_configs_are_refused_with_the_file_named(tmp_path):
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"model_inputs": ["regions"], "max_boxes": 3}))
    with pytest.raises(ValueError, match=rf"{PROCESSOR_CONFIG_NAME}: unknown processor setting\(s\) \['max_boxes'\]"):
        MemeProcessor.from_pretrained(tmp_path)
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    with pytest.raises(ValueError, match="not an hm_hf MemeProcessor"):
        MemeProcessor.from_pretrained(tmp_path)
    (tmp_path / PROCESSOR_CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MemeProcessor.from_pretrained(tmp_path)


def test_detector_settings_pass_through_what_the_features_recorded():
    from hm_hf.extract.configuration_frcnn import FrcnnConfig
    from hm_hf.extract.runner import cache_source

    assert detector_for_features({"name": "synthetic", "seed": 0}) == {"detector": "synthetic",
                                                                        "detector_settings": {}}
    detector = tiny_frcnn(max_boxes=5, nms_thresh_test=0.5)
    found = detector_for_features(cache_source(detector, fp16=False))
    assert found["detector"] == "unc-nlp/frcnn-vg-finetuned"
    settings = found["detector_settings"]
    assert settings["max_boxes"] == 5 and settings["nms_thresh_test"] == [0.5] and settings["min_size_test"] == 64
    assert set(settings) <= set(FrcnnConfig.__dataclass_fields__)  # no "architecture", "fp16", "weights_sha256"


def test_the_fasttext_model_travels_with_the_processor(tmp_path):
    model = tmp_path / "elsewhere" / "ft.bin"
    model.parent.mkdir()
    model.write_bytes(b"fastText model bytes")
    (tmp_path / "elsewhere" / "ft.bin.json").write_text(json.dumps({"lowercase": True}))
    processor = MemeProcessor(model_inputs=("text_embedding", "regions"), detector="synthetic",
                              fasttext_model=str(model))
    processor.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / PROCESSOR_CONFIG_NAME).read_text())["fasttext_model"] == \
        "fasttext/fasttext.bin"
    assert (tmp_path / "model" / "fasttext" / "fasttext.bin").read_bytes() == model.read_bytes()
    assert json.loads((tmp_path / "model" / "fasttext" / "fasttext.bin.json").read_text()) == {"lowercase": True}
    with pytest.raises(ValueError, match="needs a tokenizer"):
        MemeProcessor(model_inputs=("text", "regions"))


def test_the_decision_policy_is_the_processors_part_and_owns_the_threshold(tmp_path):
    """One owner: decision_policy.json holds the threshold, processor_config.json none; `threshold` reads the
    policy; an older processor_config.json's threshold setting reads as a fixed policy; AutoProcessor loads it."""
    from hm_hf.metrics.policy import POLICY_FILE, DecisionPolicy
    from hm_hf.models.concat import HmConcatConfig

    config = HmConcatConfig(modalities=["image"])
    policy = DecisionPolicy(temperature=2.5, threshold=0.3, rule="recall@0.9", fitted_on="dev_seen", calibrated=True)
    processor = MemeProcessor(model_inputs=("regions",), detector="synthetic", decision_policy=policy)
    written = processor.save_pretrained(tmp_path / "new")
    assert str(tmp_path / "new" / POLICY_FILE) in written
    assert "threshold" not in json.loads((tmp_path / "new" / PROCESSOR_CONFIG_NAME).read_text())
    loaded = MemeProcessor.from_pretrained(tmp_path / "new", config)
    assert loaded.decision_policy == policy and loaded.threshold == 0.3
    auto = AutoProcessor.from_pretrained(tmp_path / "new")
    assert auto.decision_policy == policy
    logits = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    decided = loaded.post_process(logits)
    assert [d["probability"] for d in decided] == pytest.approx([1 / (1 + np.exp(-0.4)), 1 / (1 + np.exp(0.4))])
    assert [d["label"] for d in decided] == [1, 1] and decided[0]["threshold_rule"] == "recall@0.9"  # both >= 0.3
    # processor_config.json as saved before the policy existed, with its own threshold
    old = tmp_path / "old"
    old.mkdir()
    (old / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "MemeProcessor",
                                                         "model_inputs": ["regions"], "threshold": 0.8}))
    legacy = MemeProcessor.from_pretrained(old, config)
    assert legacy.threshold == 0.8 and legacy.decision_policy.rule == "fixed@0.8" and not legacy.decision_policy.calibrated
    assert [d["label"] for d in legacy.post_process(logits)] == [0, 0]  # 0.73 and 0.27 are below 0.8
    (old / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "MemeProcessor",
                                                         "model_inputs": ["regions"]}))
    assert MemeProcessor.from_pretrained(old, config).decision_policy is None  # the model's own decisions
    assert MemeProcessor.from_pretrained(old, config).threshold == 0.5
    with pytest.raises(TypeError, match="must be a DecisionPolicy"):
        MemeProcessor(model_inputs=("regions",), decision_policy={"threshold": 0.3})
    # a multi-class model: arg-max decisions, a threshold by hand is refused
    six = MemeProcessor(model_inputs=("regions",))
    assert [d["label"] for d in six.post_process(torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0, 5.0]]))] == [5]
    with pytest.raises(ValueError, match="arg-max"):
        MemeProcessor.from_pretrained(old, HmConcatConfig(modalities=["image"], num_labels=6), threshold=0.4)


def test_a_threshold_given_to_a_multi_label_model_is_applied(tmp_path):
    """threshold= for a fine-grained (multi-label) model sets each label's threshold (one number for all, or
    one per label), is saved with the processor and shown in every result; without it, the shared task's 0.5."""
    from hm_hf.models.concat import HmConcatConfig

    config = HmConcatConfig(modalities=["image"], num_labels=3, problem_type="multi_label_classification")
    names = ["pc_empty", "race", "religion"]
    MemeProcessor(model_inputs=("regions",), detector="synthetic", multi_label=True,
                  label_names=names).save_pretrained(tmp_path / "fine")
    logits = torch.tensor([[-3.0, 0.8, 2.0]])  # sigmoid: 0.047, 0.69, 0.88
    default = MemeProcessor.from_pretrained(tmp_path / "fine", config)
    (plain,) = default.post_process(logits)
    assert plain["labels"] == ["race", "religion"] and plain["threshold"] == 0.5 and default.threshold == 0.5
    strict = MemeProcessor.from_pretrained(tmp_path / "fine", config, threshold=0.8)
    (result,) = strict.post_process(logits)
    assert result["labels"] == ["religion"] and result["label_ids"] == [2]
    assert result["threshold"] == 0.8 and result["thresholds"] == dict.fromkeys(names, 0.8)
    assert strict.threshold == 0.8
    per_label = MemeProcessor.from_pretrained(tmp_path / "fine", config, threshold=[0.01, 0.9, 0.9])
    (result,) = per_label.post_process(logits)
    assert result["labels"] == ["pc_empty"] and result["thresholds"] == {"pc_empty": 0.01, "race": 0.9,
                                                                         "religion": 0.9}
    assert result["threshold"] is None and per_label.threshold is None  # (no one threshold)
    per_label.save_pretrained(tmp_path / "resaved")
    assert MemeProcessor.from_pretrained(tmp_path / "resaved", config).post_process(logits)[0]["labels"] == ["pc_empty"]
    with pytest.raises(ValueError, match="3 labels"):
        MemeProcessor.from_pretrained(tmp_path / "fine", config, threshold=[0.5, 0.5])
    with pytest.raises(ValueError, match="between 0 and 1"):
        MemeProcessor.from_pretrained(tmp_path / "fine", config, threshold=1.5)


def test_older_folders_read_text_with_ppocr_and_tesseract_can_be_chosen(old_folder, tmp_path, capsys):
    """A folder saved before processors named their OCR engine (hm_hf_pipeline.json, or a processor_config.json
    without ocr_engine) reads meme text with PP-OCR, the default; ocr_engine= (or the setting in the folder's
    file, or `hm-hf predict --ocr-engine`) chooses Tesseract."""
    from hm_hf.inference.cli import cli
    from hm_hf.ocr import OcrUnavailableError, tesseract_available

    assert "ocr_engine" not in json.loads((old_folder / "model" / PIPELINE_CONFIG_NAME).read_text())
    old = HatefulMemePipeline.from_pretrained(old_folder / "model", device="cpu")
    assert old.processor.ocr_engine == "ppocr"
    chosen = HatefulMemePipeline.from_pretrained(old_folder / "model", device="cpu", ocr_engine="tesseract")
    assert chosen.processor.ocr_engine == "tesseract"
    config = chosen.config
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "MemeProcessor",
                                                          "model_inputs": ["regions"], "detector": "synthetic"}))
    assert MemeProcessor.from_pretrained(bare, config).ocr_engine == "ppocr"
    (bare / PROCESSOR_CONFIG_NAME).write_text(json.dumps({"processor_class": "MemeProcessor", "model_inputs": [
        "regions"], "detector": "synthetic", "ocr_engine": "tesseract"}))
    assert MemeProcessor.from_pretrained(bare, config).ocr_engine == "tesseract"
    image = str(old_folder / "data" / "img" / "00013.png")
    code = cli(["--model", str(old_folder / "model"), image, "--no-regions", "--ocr-engine", "tesseract"])
    out = capsys.readouterr()
    if tesseract_available():
        assert code == 0 and json.loads(out.out)["ocr_engine"] == "tesseract"
    else:
        assert code == 2 and "tesseract" in out.err.lower()
        with pytest.raises(OcrUnavailableError):
            chosen.processor.ocr_engine_info()


def test_a_tokenizer_without_its_vocabulary_is_refused_not_loaded_empty(old_folder, tmp_path):
    """tokenizer_config.json without tokenizer.json loads in transformers as a tokenizer of the special tokens
    only (every word [UNK]); it is refused, the recipe's tokenizer/ copy is used where there is one, and a
    damaged tokenizer.json is named."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(old_folder / "model", folder)
    vocabulary = len(MemeProcessor.from_pretrained(folder).tokenizer)
    (folder / "tokenizer.json").unlink()
    assert len(MemeProcessor.from_pretrained(folder).tokenizer) == vocabulary  # the recipe's tokenizer/ copy
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(OSError, match="no vocabulary beyond its 5 special tokens"):
        MemeProcessor.from_pretrained(folder)
    with pytest.raises(OSError, match="no vocabulary beyond"):
        AutoProcessor.from_pretrained(folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(OSError, match="no usable tokenizer"):
        MemeProcessor.from_pretrained(folder)


def test_the_pipeline_checks_a_clip_models_tokenizer_too(tmp_path):
    from transformers import AutoImageProcessor, AutoTokenizer

    from hm_hf.models.clip import HmClipForHatefulMemes, make_tiny_clip
    from hm_hf.text.tokenizer import TokenizerMismatchError

    texts = ["neighbors like the garden", "friends at the picnic"]
    clip = make_tiny_clip(tmp_path / "clip", texts * 3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, projection_dim=8, image_size=16, patch_size=8, vocab_size=400)
    other = make_tiny_clip(tmp_path / "other", ["a b c"], hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, projection_dim=8, image_size=16,
                           patch_size=8, vocab_size=300)
    model = HmClipForHatefulMemes.from_clip_pretrained(clip, projection_dim=4, num_pre_output_layers=1,
                                                       pre_output_dim=8)
    image_processor = AutoImageProcessor.from_pretrained(clip)
    HatefulMemePipeline(model, MemeProcessor.for_model(model.config, tokenizer=AutoTokenizer.from_pretrained(clip),
                                                       image_processor=image_processor), device="cpu")
    wrong = MemeProcessor.for_model(model.config, tokenizer=AutoTokenizer.from_pretrained(other),
                                    image_processor=image_processor)
    with pytest.raises(TokenizerMismatchError):
        HatefulMemePipeline(model, wrong, device="cpu")


def test_saving_without_a_decision_policy_removes_a_stale_one(old_folder, tmp_path):
    from hm_hf.metrics.policy import POLICY_FILE

    MemeProcessor.from_pretrained(old_folder / "model", threshold=0.9).save_pretrained(tmp_path)  # another model's
    assert (tmp_path / POLICY_FILE).is_file()
    processor = MemeProcessor.from_pretrained(old_folder / "model")
    assert processor.decision_policy is None
    processor.save_pretrained(tmp_path)
    assert not (tmp_path / POLICY_FILE).exists()
    assert MemeProcessor.from_pretrained(tmp_path).threshold == processor.threshold == 0.5


@pytest.mark.parametrize("length, pair", [(1, None), (2, None), (2, "text_pair"), (3, "text_pair")])
def test_a_max_text_length_below_the_special_tokens_is_refused(old_folder, length, pair):
    """A tokenizer cannot cut a text below its special tokens: it would cut nothing at all."""
    with pytest.raises(ValueError, match=f"max_text_length {length} leaves no room for text"):
        MemeProcessor.from_pretrained(old_folder / "model", max_text_length=length, text_pair_column=pair)
    ok = 3 if pair is None else 4
    processor = MemeProcessor.from_pretrained(old_folder / "model", max_text_length=ok, text_pair_column=pair)
    row = {"text": "a long caption " * 20, "text_pair": "more text", "region_features": np.ones((1, 2048), np.float16),
           "boxes": np.zeros((1, 4), np.float32), "image_width": 5, "image_height": 5}
    assert processor([row])["input_ids"].shape == (1, ok)


def test_hand_edited_image_processor_and_model_inputs_are_refused_naming_the_file(old_folder, tmp_path):
    import shutil

    folder = tmp_path / "model"
    HatefulMemePipeline.from_pretrained(old_folder / "model", device="cpu").save_pretrained(folder)
    settings = json.loads((folder / PROCESSOR_CONFIG_NAME).read_text())
    (folder / PROCESSOR_CONFIG_NAME).write_text(json.dumps({**settings, "model_inputs": ["text"]}))
    with pytest.raises(ValueError, match=rf"{PROCESSOR_CONFIG_NAME}: model_inputs \['text'\] but the model reads"):
        AutoProcessor.from_pretrained(folder)
    (folder / PROCESSOR_CONFIG_NAME).write_text(json.dumps({**settings, "model_inputs": ["text", "pixels"]}))
    (folder / "preprocessor_config.json").write_text("[]")
    with pytest.raises(OSError, match=r"preprocessor_config.json \(the model's image processor\) cannot be read"):
        MemeProcessor.from_pretrained(folder)
    shutil.rmtree(folder)
