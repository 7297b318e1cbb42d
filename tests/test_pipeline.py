"""Inference pipeline (hm_hf.pipeline) and OCR (hm_hf.ocr).

Models are tiny random Concat models saved the way the training recipe saves them (model folder +
tokenizer, or LoRA adapters + base_model/); the detectors are the synthetic world's shape finder and a tiny
random Faster R-CNN saved locally (box regression zeroed, as in test_extract). The helpers here are also
used by test_space.py and test_space_browser.py.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hm_hf import synthetic
from hm_hf.extract.cache import FeatureCache
from hm_hf.ocr import read_text
from hm_hf.ocr.ppocr import ppocr_available
from hm_hf.images import BadImageError, load_image
from hm_hf.pipeline import HatefulMemePipeline
from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME, PipelineSettings, save_pipeline_config
from hm_hf.synthetic.detector import SyntheticShapeDetector
from hub_cache import offline_hub_repo  # tests/hub_cache.py

needs_ppocr = pytest.mark.skipif(not ppocr_available(), reason="needs the hm_hf[ocr] extra (rapidocr, onnxruntime)")


# ------------------------------------------------------------------------------------------------ helpers


def make_data(root: Path, n_train: int = 24, n_dev: int = 8):
    memes = synthetic.make_hmd(root / "data", splits={"train": n_train, "dev_seen": n_dev}, unlabeled=())
    synthetic.write_region_features(memes, root / "features")
    return memes


def build_tiny_model(folder: Path, texts: list[str], visual_dim: int = 2048, seed: int = 0, **pipeline_settings):
    """A tiny random multimodal Concat model (BERT-style text encoder + mean-pooled regions), saved as the
    training recipe saves it (model + tokenizer beside it), with its hm_hf_pipeline.json."""
    from transformers import BertConfig

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
    from hm_hf.text.tokenizer import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(texts, folder / "tokenizer", vocab_size=300)
    torch.manual_seed(seed)
    config = HmConcatConfig(
        text_source="encoder",
        text_pooling="mean",
        dropout=0.0,
        visual_embedding_dim=visual_dim,
        text_config=BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=37, max_position_embeddings=64),
    )
    model = HmConcatForHatefulMemes(config).eval()
    with torch.no_grad():  # a random head gives ~0.5 everywhere; spread the outputs so differences show
        model.classifier.weight.mul_(20)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    settings = {"detector": "synthetic", "max_regions": 16, "max_text_length": 32, **pipeline_settings}
    save_pipeline_config(folder, **settings)
    return model, tokenizer


def direct_probability(model, tokenizer, text: str, regions, max_length: int = 32) -> float:
    """The model called by hand (no pipeline, no collator): tokenised text + mean-pooled region features."""
    encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt",
                        return_token_type_ids=True)
    features = regions.features.half().float()[None]  # region features are float16, as in the feature cache
    with torch.no_grad():
        logits = model(**encoded, visual_embeds=features, visual_attention_mask=torch.ones(features.shape[:2],
                                                                                           dtype=torch.long)).logits
    return float(torch.softmax(logits, -1)[0, 1])


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def tiny_frcnn(**overrides):
    from hm_hf.extract.configuration_frcnn import FrcnnConfig
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures

    torch.manual_seed(0)
    model = FrcnnForRegionFeatures(FrcnnConfig.tiny(**overrides))
    for layer in (model.proposal_generator.rpn_head.anchor_deltas, model.roi_heads.box_predictor.bbox_pred):
        layer.weight.data.zero_()
        layer.bias.data.zero_()
    return model.eval()


def pixel_bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid tiny PNG whose header declares width x height pixels (decoding would need gigabytes)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF)
    return bytes(data)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    memes = make_data(root)
    texts = [m.text for split in memes.values() for m in split]
    model, tokenizer = build_tiny_model(root / "model", texts)
    return {"root": root, "memes": memes, "model": model, "tokenizer": tokenizer,
            "dev": memes["dev_seen"], "image": lambda m: root / "data" / "img" / f"{m.id:05d}.png"}


@pytest.fixture(scope="module")
def pipe(world):
    return HatefulMemePipeline.from_pretrained(world["root"] / "model", device="cpu")


# ------------------------------------------------------------------------------------------------ tests


def test_pipeline_gives_the_models_own_probability(world, pipe):
    assert pipe.needs == {"text", "regions"}
    assert isinstance(pipe.detector, SyntheticShapeDetector)
    assert pipe.settings.max_text_length == 32  # read from hm_hf_pipeline.json
    seen = []
    for meme in world["dev"][:4]:
        path = world["image"](meme)
        result = pipe(str(path), texts=meme.text)
        regions = SyntheticShapeDetector().extract([Image.open(path)])[0]
        expected = direct_probability(world["model"], world["tokenizer"], meme.text, regions)
        assert result["probability"] == pytest.approx(expected, abs=1e-5)
        assert result["label"] == int(expected >= 0.5)
        assert result["label_name"] == ["not hateful", "hateful"][result["label"]]
        assert result["text"] == meme.text and result["text_source"] == "given"
        assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-6)
        seen.append(result["probability"])
    assert max(seen) - min(seen) > 1e-3  # the inputs matter


def test_the_decision_policy_calibrates_and_decides(world, tmp_path):
    """decision_policy.json beside the model: the probability is softmax(logits / T), the label is at its
    threshold, and every result says how it was decided; an older folder's own threshold setting is read when
    there is no policy file, the policy file wins when there is, and threshold= overrides both."""
    import shutil

    from hm_hf.metrics.policy import POLICY_FILE, DecisionPolicy

    folder = tmp_path / "model"
    shutil.copytree(world["root"] / "model", folder)
    meme = world["dev"][0]
    path = world["image"](meme)
    plain = HatefulMemePipeline.from_pretrained(folder, device="cpu")(path, texts=meme.text)
    assert (plain["threshold"], plain["threshold_rule"], plain["calibrated"]) == (0.5, "fixed@0.5", False)
    assert plain["label"] == int(plain["probability"] >= 0.5)
    logit = float(np.log(plain["scores"][1] / plain["scores"][0]))
    threshold = plain["probability"] + (0.01 if plain["label"] else -0.01)  # on the other side of the meme's score
    threshold = 1 / (1 + np.exp(-np.log(threshold / (1 - threshold)) / 2.0))  # ... once T = 2 has moved it
    DecisionPolicy(temperature=2.0, threshold=threshold, rule="max_f1", fitted_on="dev_seen",
                   calibrated=True).save_pretrained(folder)
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    result = pipe(path, texts=meme.text)
    assert result["probability"] == pytest.approx(1 / (1 + np.exp(-logit / 2.0)), abs=1e-6)
    assert result["label"] == 1 - plain["label"] and result["label"] == int(result["probability"] >= threshold)
    assert (result["threshold"], result["threshold_rule"], result["calibrated"]) == (threshold, "max_f1", True)
    assert pipe.settings.threshold == threshold and pipe.decision_policy.fitted_on == "dev_seen"
    # saving the pipeline keeps the policy with the model
    pipe.save_pretrained(tmp_path / "resaved")
    assert DecisionPolicy.from_pretrained(tmp_path / "resaved") == pipe.decision_policy
    # threshold= given by hand: the saved temperature stays, the rule says it was set by hand
    by_hand = HatefulMemePipeline.from_pretrained(folder, device="cpu", threshold=0.99)(path, texts=meme.text)
    assert by_hand["threshold"] == 0.99 and by_hand["threshold_rule"] == "fixed@0.99" and by_hand["label"] == 0
    assert by_hand["probability"] == pytest.approx(result["probability"], abs=1e-9)
    # an older folder's threshold setting (hm_hf_pipeline.json): used without a policy file, overruled by one
    settings = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())
    (folder / PIPELINE_CONFIG_NAME).write_text(json.dumps({**settings, "threshold": 0.97}))
    assert HatefulMemePipeline.from_pretrained(folder, device="cpu").settings.threshold == threshold
    (folder / POLICY_FILE).unlink()
    old = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert old.settings.threshold == 0.97 and old(path, texts=meme.text)["threshold_rule"] == "fixed@0.97"
    (folder / POLICY_FILE).write_text("{broken")
    with pytest.raises(ValueError, match="decision_policy.json is not valid JSON"):
        HatefulMemePipeline.from_pretrained(folder, device="cpu")


def test_inputs_path_pil_bytes_and_batches_agree(world, pipe):
    memes = world["dev"][:5]
    paths = [world["image"](m) for m in memes]
    texts = [m.text for m in memes]
    singles = [pipe(p, texts=t)["probability"] for p, t in zip(paths, texts)]
    batched = pipe([str(p) for p in paths], texts=texts, batch_size=2)  # uneven batches, padded regions
    assert [r["probability"] for r in batched] == pytest.approx(singles, abs=1e-5)
    as_pil = pipe([Image.open(p) for p in paths], texts=texts, batch_size=8)
    as_bytes = pipe([p.read_bytes() for p in paths], texts=texts)
    assert [r["probability"] for r in as_pil] == pytest.approx(singles, abs=1e-5)
    assert [r["probability"] for r in as_bytes] == pytest.approx(singles, abs=1e-5)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        pipe([paths[0], paths[1]], texts=["one"])
    for texts, says in [(b"abc", "texts must be a str, None or a list of them .* not a bytes"),
                        (5, "not a int"), (["ok", 7], r"texts\[1\] is a int: give the text as a str"),
                        (["a\ud800b"], r"texts\[0\] is not valid Unicode \(it holds a lone surrogate")]:
        with pytest.raises(ValueError, match=says):
            pipe([paths[0]] * (len(texts) if isinstance(texts, list) else 1), texts=texts)
    with pytest.raises(ValueError, match="return_neighbours=True needs a retrieval model .* this one is hm_concat"):
        pipe(paths[0], texts="x", return_neighbours=True)
    assert not pipe.retrieves


def test_regions_are_returned_in_image_pixels(world, pipe):
    meme = world["dev"][0]
    result = pipe(world["image"](meme), texts=meme.text)
    names = [r["name"] for r in result["regions"]]
    assert names[-1] == "whole image" and ("red square" in names) != ("blue disc" in names)
    main = next(r for r in result["regions"] if r["name"] in ("red square", "blue disc"))
    drawn = next(b for b in meme.boxes if b[4] == meme.image_kind)
    assert main["box"] == pytest.approx(list(drawn[:4]), abs=1.0)
    assert pipe(world["image"](meme), texts=meme.text, return_regions=False).get("regions") is None


def test_synthetic_detector_reproduces_the_generators_features(world):
    """The synthetic 'detector' finds each meme's object where it was drawn, with the cache's features."""
    cache = FeatureCache(world["root"] / "features")
    detector = SyntheticShapeDetector()
    for meme in world["dev"]:
        stored = cache.get(str(meme.id))
        found = detector.extract([Image.open(world["image"](meme))])[0]
        main = int((found.object_ids == meme.image_kind).nonzero()[0, 0])
        stored_main = int(np.nonzero(stored.object_ids == meme.image_kind)[0][0])
        assert found.boxes[main].tolist() == pytest.approx(stored.boxes[stored_main].tolist(), abs=1.0)
        stored_feature = stored.features[stored_main].astype(np.float32)
        same = cosine(found.features[main].numpy(), stored_feature)
        other_kind = cosine(detector.features[1 - meme.image_kind], stored_feature)
        assert same > 0.85 and same - other_kind > 0.3, (same, other_kind)  # (noise: one draw of N(0, 0.3))
        other = found.features[found.object_ids == 1 - meme.image_kind]
        assert len(other) == 0  # the other kind of object is not hallucinated


def test_peft_adapters_with_their_base_model_load(world, tmp_path):
    """LoRA adapters + base_model/ (what the recipe saves for a random-init base) load and predict."""
    from peft import get_peft_model

    from hm_hf.models.concat import HmConcatForHatefulMemes
    from hm_hf.peft.defaults import build_peft_config

    folder = tmp_path / "lora"
    base = HmConcatForHatefulMemes.from_pretrained(str(world["root"] / "model"))
    base.save_pretrained(str(folder / "base_model"))  # before peft injects its layers (their names differ)
    peft_model = get_peft_model(base, build_peft_config(base, "lora", r=4))
    with torch.no_grad():  # trained-looking adapters: B != 0 so the adapters change the output
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.save_pretrained(str(folder))
    world["tokenizer"].save_pretrained(str(folder))
    save_pipeline_config(folder, detector="synthetic", max_text_length=32)
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert hasattr(pipe.model, "peft_config")
    meme = world["dev"][1]
    regions = SyntheticShapeDetector().extract([Image.open(world["image"](meme))])[0]
    peft_model.eval()
    expected = direct_probability(peft_model, world["tokenizer"], meme.text, regions)
    without = direct_probability(world["model"], world["tokenizer"], meme.text, regions)
    got = pipe(world["image"](meme), texts=meme.text)["probability"]
    assert got == pytest.approx(expected, abs=1e-5)
    assert abs(expected - without) > 1e-4  # the adapters were really applied


def test_region_model_with_a_saved_faster_rcnn(world, tmp_path):
    """The real extractor path: a (tiny, random) Faster R-CNN saved locally, named by the pipeline config."""
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures

    detector = tiny_frcnn()
    folder = tmp_path / "model"
    texts = [m.text for m in world["memes"]["train"]]
    model, tokenizer = build_tiny_model(folder, texts, visual_dim=detector.config.region_feature_dim,
                                        detector="detector", detector_max_boxes=5, detector_nms_thresholds=[0.4, 0.8])
    detector.save_pretrained(str(folder / "detector"))  # relative: read inside the model folder
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert isinstance(pipe.detector, FrcnnForRegionFeatures) and pipe.detector.config.max_boxes == 5
    assert pipe.detector.config.nms_thresh_test == [0.4, 0.8]  # the training features' NMS sweep
    meme = world["dev"][2]
    result = pipe(world["image"](meme), texts=meme.text)
    reference = FrcnnForRegionFeatures.from_pretrained(str(folder / "detector")).eval()
    reference.config.update_inference(max_boxes=5, nms_thresh_test=[0.4, 0.8])
    regions = reference.extract([Image.open(world["image"](meme)).convert("RGB")])[0]
    assert len(result["regions"]) == regions.num_boxes <= 5
    assert result["probability"] == pytest.approx(direct_probability(model, tokenizer, meme.text, regions), abs=1e-5)
    width, height = 320, 240
    for region in result["regions"]:
        x1, y1, x2, y2 = region["box"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height  # original image pixels


def test_clear_errors_for_missing_parts(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        HatefulMemePipeline.from_pretrained(tmp_path / "no-such-model")
    (tmp_path / "afile").write_text("")
    with pytest.raises(FileNotFoundError, match="afile' is a file: give a folder saved by"):
        HatefulMemePipeline.from_pretrained(tmp_path / "afile")  # not a Hub id to try (and retry) online
    with pytest.raises(OSError, match="detector .* could not be loaded"):
        HatefulMemePipeline.from_pretrained(world["root"] / "model", detector=str(tmp_path / "no-detector"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / PIPELINE_CONFIG_NAME).write_text(json.dumps({"detecter": "synthetic"}))
    with pytest.raises(ValueError, match="unknown pipeline setting"):
        HatefulMemePipeline.from_pretrained(bad)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        HatefulMemePipeline(world["model"], detector=SyntheticShapeDetector())
    assert PipelineSettings().detector == "unc-nlp/frcnn-vg-finetuned"


def test_pickled_damaged_or_mismatched_weights_are_refused(world, tmp_path, monkeypatch):
    """A prediction from randomly initialised weights looks like any other, and a .bin file is a pickle: hm_hf
    refuses both, naming the folder, and never calls torch.load."""
    import shutil

    from peft import get_peft_model
    from safetensors.torch import load_file, save_file

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
    from hm_hf.peft.defaults import build_peft_config

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(world["root"] / "model", folder)
        return folder

    def unpickled(*args, **kwargs):
        raise AssertionError("torch.load was called")

    weights = load_file(str(world["root"] / "model" / "model.safetensors"))
    pickled = copy("pickled")
    torch.save(weights, pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    half = copy("half")
    save_file(dict(list(weights.items())[::2]), str(half / "model.safetensors"), metadata={"format": "pt"})
    truncated = copy("truncated")
    (truncated / "model.safetensors").write_bytes((half / "model.safetensors").read_bytes()[:100])
    retyped = copy("retyped")  # a config.json naming another architecture: none of the weights fit it
    config = json.loads((retyped / "config.json").read_text())
    (retyped / "config.json").write_text(json.dumps({**config, "model_type": "hm_visual_bert"}))
    adapters = tmp_path / "lora"
    base = HmConcatForHatefulMemes.from_pretrained(str(world["root"] / "model"))
    base.save_pretrained(str(adapters / "base_model"))
    get_peft_model(base, build_peft_config(base, "lora", r=4)).save_pretrained(str(adapters), safe_serialization=False)
    world["tokenizer"].save_pretrained(str(adapters))
    assert (adapters / "adapter_model.bin").is_file() and not (adapters / "adapter_model.safetensors").exists()

    monkeypatch.setattr(torch, "load", unpickled)
    with pytest.raises(OSError, match=f"{pickled}: no safetensors weights .* never unpickles a pytorch_model.bin"):
        HatefulMemePipeline.from_pretrained(pickled)
    with pytest.raises(ValueError, match=f"{half}: its weights do not fit .* missing: .*\\({len(weights) // 2}\\)"):
        HatefulMemePipeline.from_pretrained(half)
    with pytest.raises(OSError, match=f"{truncated}: its safetensors weights cannot be read .* damaged or truncated"):
        HatefulMemePipeline.from_pretrained(truncated)
    with pytest.raises(ValueError, match=f"{retyped}: its weights do not fit its config.json \\(hm_visual_bert\\)"):
        HatefulMemePipeline.from_pretrained(retyped)
    with pytest.raises(OSError, match=f"{adapters}: no adapter_model.safetensors .* never an adapter_model.bin"):
        HatefulMemePipeline.from_pretrained(adapters)
    other = tmp_path / "other-base"  # a fastText Concat: none of the LoRA targets (BERT layers) exist in it
    HmConcatForHatefulMemes(HmConcatConfig(text_embedding_dim=24)).save_pretrained(str(other))
    fresh = HmConcatForHatefulMemes.from_pretrained(str(world["root"] / "model"))
    get_peft_model(fresh, build_peft_config(fresh, "lora", r=4)).save_pretrained(str(tmp_path / "lora-safe"))
    world["tokenizer"].save_pretrained(str(tmp_path / "lora-safe"))
    with pytest.raises(ValueError, match=f"{tmp_path / 'lora-safe' / 'adapter_config.json'}: these adapters do not "
                                         "fit the base model they were put on \\(a hm_concat model\\)"):
        HatefulMemePipeline.from_pretrained(tmp_path / "lora-safe", base_model=str(other))
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(world["root"] / "model", tmp_path / "home_model")
    assert HatefulMemePipeline.from_pretrained("~/home_model", device="cpu").model.config.model_type == "hm_concat"


def test_bad_images_are_refused_with_a_reason(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(good, format="PNG")
    assert load_image(good.getvalue()).size == (64, 48)
    with pytest.raises(BadImageError, match="not an image"):
        load_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(BadImageError, match="truncated"):
        load_image(good.getvalue()[: len(good.getvalue()) // 2])
    started = time.perf_counter()
    with pytest.raises(BadImageError, match="100,000,000 pixels, more than the limit of 40,000,000"):
        load_image(pixel_bomb_png(10_000, 10_000))  # refused from the header: nothing is decoded
    with pytest.raises(BadImageError, match="900,000,000 pixels, more than the limit"):
        load_image(pixel_bomb_png())  # beyond Pillow's own bomb limit too
    assert time.perf_counter() - started < 1.0
    with pytest.raises(BadImageError, match="more than the limit"):
        load_image(good.getvalue(), max_bytes=10)
    with pytest.raises(BadImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(BadImageError, match="is a folder: give the image files in it"):
        load_image(tmp_path)
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    with pytest.raises(BadImageError, match="https://example.com/a.png: an address is not fetched"):
        load_image("https://example.com/a.png")
    with pytest.raises(BadImageError, match=r"C <= 4 channels, got \(3, 8, 8\) uint8: .*transpose\(1, 2, 0\)"):
        load_image(np.zeros((3, 8, 8), np.uint8))
    assert load_image(np.full((8, 8, 1), 7, np.uint8)).getpixel((0, 0)) == (7, 7, 7)
    (tmp_path / "truncated.png").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    with pytest.raises(BadImageError, match="truncated"):
        load_image(Image.open(tmp_path / "truncated.png"))  # opened by the caller, decoded only here


def test_training_extraction_and_inference_see_the_same_pixels(tmp_path):
    """The extractor (layouts.open_image, as the reference's imread turns and scales), the training collator
    (hm_hf.images.to_rgb on the data set's decoded image) and inference (load_image) once differed: 16-bit grey
    came out white to the extractor only, transparent pixels black to training and extraction, white to
    inference. A model must see at inference what it was trained on."""
    from hm_hf.data.layouts import open_image
    from hm_hf.images import to_rgb

    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :32] = (200, 30, 30, 255)  # opaque red on the left, see-through black on the right
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    for name in ("grey16.png", "transparent.png"):
        extracted, problem = open_image(tmp_path / name)
        assert problem is None
        inferred = np.asarray(load_image(tmp_path / name))
        assert np.array_equal(np.asarray(extracted), inferred), name
        assert np.array_equal(np.asarray(to_rgb(Image.open(tmp_path / name))), inferred), name
    assert (inferred[:, 40] == 255).all() and (inferred[:, 10] == (200, 30, 30)).all()
    assert abs(np.asarray(load_image(tmp_path / "grey16.png")).mean() - 127.5) < 2


def test_16_bit_and_float_grey_images_are_scaled_not_clipped(tmp_path):
    """Pillow's own convert clips 16-bit grey at 255 (a scan or a medical-style PNG came out white, and OCR
    read nothing): the grey levels keep their order and span."""
    ramp = np.linspace(0, 1, 256 * 4).reshape(32, 32)
    files = {"i16.png": (ramp * 65535).astype(np.uint16), "float.tiff": ramp.astype(np.float32),
             "i32.tiff": (ramp * 100_000 - 5_000).astype(np.int32), "flat.tiff": np.full((32, 32), 100_000, np.int32)}
    for name, grey in files.items():
        Image.fromarray(grey).save(tmp_path / name)
    for name in ("i16.png", "float.tiff", "i32.tiff"):
        assert Image.open(tmp_path / name).mode in ("I;16", "F", "I")
        pixels = np.asarray(load_image(tmp_path / name))[:, :, 0].astype(int)
        assert (pixels.min(), pixels.max()) == (0, 255), name
        assert abs(pixels.mean() - 127.5) < 2 and (np.diff(pixels.ravel()) >= 0).all(), name
    assert np.asarray(load_image(tmp_path / "flat.tiff")).min() == 255  # one level beyond 16 bits: no range to stretch


@needs_ppocr
def test_ocr_reads_the_synthetic_memes_text(world):
    memes = world["dev"][:3]
    read = [read_text(Image.open(world["image"](m))) for m in memes]
    assert sum(r.lower() == m.text for r, m in zip(read, memes)) >= 2, read
    assert all(kw in r for r, m in zip(read, memes) for kw in m.text.split() if kw in synthetic.KEYWORDS[m.text_kind])
    assert read_text(Image.new("RGB", (200, 100), (255, 255, 255))) == ""


@needs_ppocr
def test_pipeline_reads_the_text_when_none_is_given(world, pipe):
    """With the processor's default engine, PP-OCR (the meme OCR), which the output names."""
    meme = world["dev"][3]
    assert pipe.processor.ocr_engine == "ppocr"
    result = pipe(world["image"](meme))
    assert result["text_source"] == "ocr" and result["ocr_engine"] == "ppocr"
    assert result["text"].lower() == meme.text
    assert result["probability"] == pytest.approx(pipe(world["image"](meme), texts=meme.text)["probability"], abs=1e-5)
    invisible = pipe(world["image"](meme), texts="\u200b \u200e")  # zero-width space, direction mark: no text
    assert invisible["text_source"] == "ocr" and invisible["text"].lower() == meme.text


def test_fasttext_text_embedding_model(world, tmp_path):
    """A seed-style Concat (fastText sentence vector + regions): the pipeline embeds the text as training did."""
    fasttext_embeddings = pytest.importorskip("hm_hf.text.fasttext_embeddings")
    pytest.importorskip("fasttext", reason="needs the hm_hf[fasttext] extra (fasttext-numpy2)")
    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes

    corpus = synthetic.make_hmd(tmp_path / "corpus", splits={"train": 120}, image_size=(32, 24), unlabeled=())
    folder = tmp_path / "model"
    ft_path = fasttext_embeddings.train_fasttext([m.text for m in corpus["train"]],
                                                 folder / "fasttext" / "fasttext.bin",
                                                 epoch=5, dim=24, bucket=20_000, thread=1)
    torch.manual_seed(0)
    model = HmConcatForHatefulMemes(HmConcatConfig(text_embedding_dim=24, dropout=0.0)).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20)
    model.save_pretrained(str(folder))
    save_pipeline_config(folder, detector="synthetic")
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert pipe.needs == {"text_embedding", "regions"} and pipe.tokenizer is None
    meme = world["dev"][0]
    vector = fasttext_embeddings.sentence_vectors(fasttext_embeddings.load_fasttext(ft_path), [meme.text])
    regions = SyntheticShapeDetector().extract([Image.open(world["image"](meme))])[0]
    with torch.no_grad():
        logits = model(text_embedding=torch.from_numpy(vector), visual_embeds=regions.features.half().float()[None],
                       visual_attention_mask=torch.ones(1, regions.num_boxes, dtype=torch.long)).logits
    expected = float(torch.softmax(logits, -1)[0, 1])
    assert pipe(world["image"](meme), texts=meme.text)["probability"] == pytest.approx(expected, abs=1e-5)
    (folder / "fasttext" / "fasttext.bin").unlink()
    with pytest.raises(FileNotFoundError, match="fasttext/fasttext.bin"):
        HatefulMemePipeline.from_pretrained(folder)


def test_vision_backbone_model_uses_the_saved_image_processor(world, tmp_path):
    """A Concat with a (tiny ResNet) vision encoder reads pixels through the image processor saved beside it."""
    from transformers import BertConfig, ResNetConfig, ViTImageProcessor

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes

    torch.manual_seed(0)
    config = HmConcatConfig(
        text_source="encoder", text_pooling="mean", dropout=0.0, image_source="encoder",
        text_config=BertConfig(vocab_size=len(world["tokenizer"]), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=37, max_position_embeddings=64),
        vision_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    )  # fmt: skip
    model = HmConcatForHatefulMemes(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(str(folder))
    world["tokenizer"].save_pretrained(str(folder))
    with pytest.raises(OSError, match="has no preprocessor_config.json"):
        HatefulMemePipeline.from_pretrained(folder)
    processor = ViTImageProcessor(size={"height": 48, "width": 64})
    processor.save_pretrained(str(folder))
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert pipe.needs == {"text", "pixels"} and pipe.detector is None
    meme = world["dev"][1]
    image = Image.open(world["image"](meme)).convert("RGB")
    encoded = world["tokenizer"]([meme.text], return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        logits = model(**encoded, pixel_values=processor(images=[image], return_tensors="pt")["pixel_values"]).logits
    result = pipe(image, texts=meme.text)
    assert result["probability"] == pytest.approx(float(torch.softmax(logits, -1)[0, 1]), abs=1e-5)
    assert "regions" not in result


def test_loads_from_a_hub_id(world, tmp_path, monkeypatch):
    """A Hub id resolves through huggingface_hub (here its offline cache: no network in tests)."""
    from hm_hf.metrics.policy import DecisionPolicy

    snapshot = offline_hub_repo(tmp_path, monkeypatch, world["root"] / "model", "some-org/tiny-meme-model",
                                absent=("adapter_config.json", "preprocessor_config.json", "processor_config.json"),
                                ignore=("tokenizer",))
    DecisionPolicy(temperature=3.0, threshold=0.4, rule="fpr@0.05", fitted_on="dev_seen",
                   calibrated=True).save_pretrained(snapshot)
    pipe = HatefulMemePipeline.from_pretrained("some-org/tiny-meme-model", device="cpu")
    assert isinstance(pipe.detector, SyntheticShapeDetector)  # hm_hf_pipeline.json came from the repo
    assert pipe.decision_policy.temperature == 3.0 and pipe.settings.threshold == 0.4  # and decision_policy.json
    meme = world["dev"][0]
    local = HatefulMemePipeline.from_pretrained(world["root"] / "model", device="cpu")
    local_result = local(world["image"](meme), texts=meme.text)
    logit = np.log(local_result["scores"][1] / local_result["scores"][0])
    assert pipe(world["image"](meme), texts=meme.text)["probability"] == pytest.approx(
        1 / (1 + np.exp(-logit / 3.0)), abs=1e-6)


def test_a_hub_revision_is_read_whole_and_a_cache_dir_is_used(world, tmp_path, monkeypatch, capsys):
    """revision= gives that revision's weights, processor settings, tokenizer and decision policy together (not
    main's settings beside the revision's weights), as `hm-hf predict --revision` does; cache_dir= is where the
    repo is looked up."""
    from hm_hf.metrics.policy import DecisionPolicy

    texts = [m.text for split in world["memes"].values() for m in split]
    version_2, tokenizer_2 = build_tiny_model(tmp_path / "v2", texts[: len(texts) // 3], seed=1, max_text_length=24)
    assert tokenizer_2.get_vocab() != world["tokenizer"].get_vocab()  # so the test sees which tokenizer came
    DecisionPolicy(temperature=2.0, threshold=0.3, rule="max_f1", fitted_on="dev_seen",
                   calibrated=True).save_pretrained(tmp_path / "v2")
    absent = ("adapter_config.json", "preprocessor_config.json", "processor_config.json")
    cache = tmp_path / "elsewhere"
    for folder, ref, commit in ((world["root"] / "model", "main", "1" * 40), (tmp_path / "v2", "v2", "2" * 40)):
        offline_hub_repo(tmp_path, monkeypatch, folder, "org/memes", absent=absent, ref=ref, commit=commit,
                         cache=cache)
    absent_policy = cache / "models--org--memes" / ".no_exist" / ("1" * 40) / "decision_policy.json"
    absent_policy.touch()  # main has none

    def weights(model):
        return model.classifier.weight.detach()

    latest = HatefulMemePipeline.from_pretrained("org/memes", device="cpu", cache_dir=cache)
    pinned = HatefulMemePipeline.from_pretrained("org/memes", device="cpu", cache_dir=cache, revision="v2")
    torch.testing.assert_close(weights(latest.model), weights(world["model"]))
    torch.testing.assert_close(weights(pinned.model), weights(version_2))
    assert (latest.settings.max_text_length, pinned.settings.max_text_length) == (32, 24)
    assert latest.decision_policy is None and pinned.decision_policy.temperature == 2.0
    assert pinned.processor.tokenizer.get_vocab() == tokenizer_2.get_vocab()
    assert latest.processor.tokenizer.get_vocab() == world["tokenizer"].get_vocab()
    meme = world["dev"][0]
    pinned_again = HatefulMemePipeline.from_pretrained(tmp_path / "v2", device="cpu")
    assert pinned(world["image"](meme), texts=meme.text)["scores"] == pytest.approx(
        pinned_again(world["image"](meme), texts=meme.text)["scores"], abs=1e-6)
    with pytest.raises(OSError):  # the default cache does not hold the repo: cache_dir was what found it
        HatefulMemePipeline.from_pretrained("org/memes", device="cpu")

    import huggingface_hub.constants

    from hm_hf.inference.cli import cli

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    capsys.readouterr()
    assert cli(["--model", "org/memes", "--revision", "v2", str(world["image"](meme)), "--text", meme.text]) == 0
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line["probability"] == pytest.approx(pinned(world["image"](meme), texts=meme.text)["probability"], abs=1e-6)


def test_predict_cli(world, capsys, tmp_path):
    from hm_hf.inference.cli import cli

    memes = world["dev"][:2]
    paths = [str(world["image"](m)) for m in memes]
    argv = ["--model", str(world["root"] / "model"), *paths, "--text", memes[0].text, "--text", memes[1].text]
    assert cli(argv + ["--no-regions"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == paths and all("regions" not in line for line in lines)
    assert all(line["threshold"] == 0.5 and line["threshold_rule"] == "fixed@0.5" and line["calibrated"] is False
               for line in lines)  # how each label was decided
    pipe = HatefulMemePipeline.from_pretrained(world["root"] / "model", device="cpu")
    assert lines[1]["probability"] == pytest.approx(pipe(paths[1], texts=memes[1].text)["probability"], abs=1e-5)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert cli(["--model", str(world["root"] / "model"), str(broken), "--text", "x"]) == 2
    assert "broken.png is not an image" in capsys.readouterr().err


@needs_ppocr
def test_predict_cli_reads_the_text_with_the_meme_ocr(world, capsys):
    """`hm-hf predict` without --text: the processor's engine (PP-OCR) reads the caption, and says so."""
    from hm_hf.inference.cli import cli

    meme = world["dev"][1]
    assert cli(["--model", str(world["root"] / "model"), str(world["image"](meme)), "--no-regions"]) == 0
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line["text_source"] == "ocr" and line["ocr_engine"] == "ppocr"
    assert line["text"].split() == meme.text.split()


def test_saved_relative_paths_are_read_in_the_model_folder_or_hub_repo_not_the_cwd(world, tmp_path, monkeypatch):
    """processor settings that name a part of the model folder (detector="detector": the Faster R-CNN saved
    in the folder's detector/, an image processor's folder) are read there, from any working directory and from
    the model's Hub repo; a part missing from the folder is an error naming it, never a same-named folder in
    the working directory."""
    from hm_hf.extract.modeling_frcnn import FrcnnForRegionFeatures
    from hm_hf.processing.processor import _load_image_processor
    from transformers import ViTImageProcessor

    detector = tiny_frcnn(max_boxes=7)
    folder = tmp_path / "model"
    texts = [m.text for m in world["memes"]["train"]]
    build_tiny_model(folder, texts, visual_dim=detector.config.region_feature_dim, detector="detector",
                     detector_max_boxes=5)
    detector.save_pretrained(str(folder / "detector"))
    ViTImageProcessor(size={"height": 40, "width": 56}).save_pretrained(str(folder / "vision"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    local = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert isinstance(local.detector, FrcnnForRegionFeatures) and local.detector.config.max_boxes == 5
    assert _load_image_processor(str(folder), "vision").size == {"height": 40, "width": 56}
    # the same folder as a Hub repo: its detector/ comes from the repo's snapshot
    offline_hub_repo(tmp_path, monkeypatch, folder, "some-org/region-model",
                      absent=("adapter_config.json", "preprocessor_config.json", "processor_config.json",
                              "decision_policy.json"))
    hub = HatefulMemePipeline.from_pretrained("some-org/region-model", device="cpu")
    assert isinstance(hub.detector, FrcnnForRegionFeatures) and hub.detector.config.max_boxes == 5
    assert Path(hub.detector.name_or_path).parts[-1] == "detector" and "hub" in Path(hub.detector.name_or_path).parts
    meme = world["dev"][0]
    assert hub(world["image"](meme), texts=meme.text)["probability"] == pytest.approx(
        local(world["image"](meme), texts=meme.text)["probability"], abs=1e-6)
    # a folder that lost its detector/: an error naming it, not the working directory's detector/
    import shutil

    lost = tmp_path / "lost"
    shutil.copytree(folder, lost, ignore=shutil.ignore_patterns("detector"))
    tiny_frcnn(max_boxes=3).save_pretrained(str(elsewhere / "detector"))
    with pytest.raises(OSError, match=rf"detector 'detector' is not in the model folder {lost}"):
        HatefulMemePipeline.from_pretrained(lost, device="cpu")
    # a detector given by the user is theirs: relative to the working directory
    given = HatefulMemePipeline.from_pretrained(lost, device="cpu", detector="detector")
    assert Path(given.detector.name_or_path).resolve() == (elsewhere / "detector").resolve()
    (elsewhere / "synthetic").mkdir()  # "synthetic" names the synthetic world's shape finder, not a folder here
    named = HatefulMemePipeline.from_pretrained(world["root"] / "model", device="cpu", detector="synthetic")
    assert isinstance(named.detector, SyntheticShapeDetector)


def test_a_text_pair_model_reads_both_texts(world, tmp_path, capsys):
    """A model trained on a text pair (MMHS150K: the tweet's text + the image's OCR text, img_txt/): the pipeline
    takes the pair (text_pairs=, a string for one meme) and says what it read; `hm-hf predict --text-pair`
    passes it; a pair given to a model that reads none is refused, not dropped."""
    from hm_hf.inference.cli import cli

    folder = tmp_path / "pair-model"
    model, tokenizer = build_tiny_model(folder, [m.text for m in world["memes"]["train"]], text_pair=True)
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    assert pipe.processor.text_pair_column == "text_pair"
    meme = world["dev"][0]
    path = world["image"](meme)
    result = pipe(path, texts="the tweet says this", text_pairs=meme.text)
    assert result["text"] == "the tweet says this" and result["text_pair"] == meme.text
    assert result["text_source"] == "given"
    regions = SyntheticShapeDetector().extract([Image.open(path)])[0]
    encoded = tokenizer(["the tweet says this"], [meme.text], truncation=True, max_length=32, return_tensors="pt",
                        return_token_type_ids=True)
    features = regions.features.half().float()[None]
    with torch.no_grad():
        logits = model(**encoded, visual_embeds=features,
                       visual_attention_mask=torch.ones(features.shape[:2], dtype=torch.long)).logits
    assert result["probability"] == pytest.approx(float(torch.softmax(logits, -1)[0, 1]), abs=1e-5)
    alone = pipe(path, texts="the tweet says this", text_pairs="something else entirely")["probability"]
    assert abs(alone - result["probability"]) > 1e-6  # the pair is read
    batch = pipe([path, path], texts=["the tweet says this"] * 2, text_pairs=[meme.text, meme.text])
    assert [r["probability"] for r in batch] == pytest.approx([result["probability"]] * 2, abs=1e-5)
    assert cli(["--model", str(folder), str(path), "--text", "the tweet says this", "--text-pair", meme.text,
                "--no-regions"]) == 0
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line["text_pair"] == meme.text and line["probability"] == pytest.approx(result["probability"], abs=1e-5)
    single = HatefulMemePipeline.from_pretrained(world["root"] / "model", device="cpu")
    with pytest.raises(ValueError, match="reads no text pair"):
        single(path, texts=meme.text, text_pairs="image text")
    assert cli(["--model", str(world["root"] / "model"), str(path), "--text", "x", "--text-pair", "y"]) == 2
    assert "reads no text pair" in capsys.readouterr().err


def test_a_text_pair_model_runs_ocr_only_for_a_missing_pair(world, tmp_path, monkeypatch):
    """A pair model's OCR reads the image's text, its pair: given the pair, nothing is OCR'd (no 0.5 s per meme
    thrown away, no OCR engine needed), even when the post's text is empty; without it, OCR fills the pair."""
    folder = tmp_path / "pair-model"
    build_tiny_model(folder, [m.text for m in world["memes"]["train"]], text_pair=True)
    pipe = HatefulMemePipeline.from_pretrained(folder, device="cpu")
    calls = []
    monkeypatch.setattr(type(pipe.processor), "read_text", lambda self, image: calls.append(1) or "ocr text")
    path = world["image"](world["dev"][0])
    for text in ("", None, "a tweet"):
        result = pipe(path, texts=text, text_pairs="words on the image")
        assert result["text_pair"] == "words on the image" and result["text_source"] == "given"
    assert calls == []
    result = pipe(path, texts="a tweet")
    assert calls == [1] and result["text_pair"] == "ocr text" and result["text_source"] == "ocr"
    assert result["text"] == "a tweet"
    # "" is an image without text (most of MMHS150K's: no img_txt/ file), not a request for OCR
    empty = pipe(path, texts="a tweet", text_pairs="")
    assert calls == [1] and empty["text_pair"] == "" and empty["text_source"] == "given"
