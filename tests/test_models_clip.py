"""hm_clip (Hate-CLIPper style): fusions, LoRA, save/load with a referenced frozen CLIP, the embedding cache."""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import hm_hf  # noqa: F401  (registers the Auto classes)
from hm_hf.models.clip import HmClipConfig, HmClipForHatefulMemes, make_tiny_clip
from hm_hf.models.clip.embedding_cache import (
    IMAGE_EMBEDS,
    TEXT_EMBEDS,
    ClipMemeCollator,
    add_clip_embeddings,
    clip_fingerprint,
)

TEXTS = ["neighbors like the garden", "friends at the picnic", "students love sunrise", "gamers on holiday"]
COLORS = [(220, 40, 40), (40, 70, 220), (40, 170, 60), (230, 200, 40)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny_clip"
    return make_tiny_clip(folder, TEXTS * 3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, projection_dim=8, image_size=16, patch_size=8, vocab_size=400)


@pytest.fixture(scope="module")
def processor(tiny_clip):
    from transformers import CLIPProcessor

    return CLIPProcessor.from_pretrained(tiny_clip)


def _rows(n=4):
    return [{"text": TEXTS[i % 4], "image": Image.new("RGB", (40, 30), COLORS[i % 4]), "label": i % 2}
            for i in range(n)]


def _batch(processor, n=4):
    collator = ClipMemeCollator(tokenizer=processor.tokenizer, image_processor=processor.image_processor)
    return collator(_rows(n))


def _model(tiny_clip, **overrides):
    torch.manual_seed(0)
    options = dict(projection_dim=4, num_pre_output_layers=1, pre_output_dim=8)
    options.update(overrides)
    return HmClipForHatefulMemes.from_clip_pretrained(tiny_clip, **options)


def test_make_tiny_clip_is_a_clip_checkpoint(tiny_clip, processor):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(tiny_clip)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    assert type(tokenizer).__name__ == "CLIPTokenizer" and tokenizer.model_max_length == 77
    assert clip.config.text_config.eos_token_id == tokenizer.eos_token_id != 2  # pooled at the first end-of-text
    assert clip.config.text_config.vocab_size == len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("neighbors zqx")["input_ids"])
    assert tokens[:2] == ["<|startoftext|>", "neighbors</w>"] and tokens[-1] == "<|endoftext|>"  # trained merges
    assert AutoImageProcessor.from_pretrained(tiny_clip)(images=[Image.new("RGB", (40, 30))],
                                                         return_tensors="pt")["pixel_values"].shape == (1, 3, 16, 16)
    assert make_tiny_clip(tiny_clip) == tiny_clip  # an existing checkpoint is kept


def test_config_checks_and_fused_sizes():
    assert [HmClipConfig(fusion=f, projection_dim=8).fused_dim for f in ("concat", "align", "cross")] == [16, 8, 64]
    with pytest.raises(ValueError, match="fusion"):
        HmClipConfig(fusion="sum")
    with pytest.raises(ValueError, match="clip_features"):
        HmClipConfig(clip_features="hidden")
    config = HmClipConfig(clip_config={"text_config": {"hidden_size": 24}}, clip_features="projected")
    assert config.text_feature_dim == config.clip_config.projection_dim
    assert HmClipConfig(clip_config={"text_config": {"hidden_size": 24}}).text_feature_dim == 24


def test_fusions_compute_concat_product_and_outer_product(tiny_clip):
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    ni, nt = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    expected = {"concat": torch.cat([ni, nt], -1), "align": ni * nt,
                "cross": torch.einsum("bi,bj->bij", ni, nt).reshape(3, 16)}
    for fusion, value in expected.items():
        model = _model(tiny_clip, fusion=fusion)
        assert torch.allclose(model.hm_clip.fuse(image, text), value, atol=1e-6)
        assert model.hm_clip.pre_output[1].in_features == model.config.fused_dim


@pytest.mark.parametrize("fusion", ["concat", "align", "cross"])
@pytest.mark.parametrize("lora", [False, True], ids=["frozen", "lora"])
def test_forward_backward(tiny_clip, processor, fusion, lora):
    from peft import get_peft_model

    from hm_hf.peft import build_peft_config

    model = _model(tiny_clip, fusion=fusion)
    if lora:
        config = build_peft_config(model, "lora", r=2, init_lora_weights=False)
        assert set(config.target_modules) == {"q_proj", "v_proj"}
        assert set(config.modules_to_save) == {"classifier", "image_map", "text_map", "pre_output"}
        model = get_peft_model(model, config)
    batch = _batch(processor)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    out = model(**batch)
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any("image_map" in n for n in grads) and any("text_map" in n for n in grads)
    assert any("classifier" in n for n in grads)
    clip_grads = {n for n in grads if ".clip." in n}
    if lora:  # LoRA on both encoders' attention, the CLIP weights themselves frozen
        assert clip_grads and all("lora_" in n for n in clip_grads)
        assert any("vision_model" in n for n in clip_grads) and any("text_model" in n for n in clip_grads)
    else:
        assert not clip_grads


def test_unfrozen_clip_trains_and_token_type_ids_are_ignored(tiny_clip, processor):
    model = _model(tiny_clip, freeze_clip=False)
    batch = _batch(processor)
    out = model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
    out.loss.backward()
    assert model.hm_clip.clip.vision_model.embeddings.patch_embedding.weight.grad is not None
    with pytest.raises(ValueError, match="pixel_values"):
        model(input_ids=batch["input_ids"])


def _saved_keys(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def test_save_load_with_the_frozen_clip_referenced(tiny_clip, processor, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = _model(tiny_clip, fusion="cross").eval()
    with torch.no_grad():  # make the head non-trivial so identical logits mean something
        for p in model.classifier.parameters():
            p.normal_()
    batch = _batch(processor)
    model.save_pretrained(tmp_path / "saved")
    keys = _saved_keys(tmp_path / "saved")
    assert keys and not any(".clip." in k or k.startswith("clip.") for k in keys)
    assert {k.split(".")[0] for k in keys} == {"hm_clip", "classifier"}
    config = AutoConfig.from_pretrained(tmp_path / "saved")
    assert config.model_type == "hm_clip" and config.freeze_clip and config.clip_model_name_or_path == tiny_clip
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert isinstance(reloaded, HmClipForHatefulMemes)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-6)
    assert not any(p.requires_grad for p in reloaded.hm_clip.clip.parameters())


def test_trained_clip_is_saved_in_full(tiny_clip, processor, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = _model(tiny_clip, freeze_clip=False).eval()
    with torch.no_grad():
        model.hm_clip.clip.text_model.final_layer_norm.weight.add_(0.5)  # "trained": differs from the reference
    model.save_pretrained(tmp_path / "full")
    assert any(k.startswith("hm_clip.clip.") for k in _saved_keys(tmp_path / "full"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full").eval()
    batch = _batch(processor)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-6)


def test_missing_reference_is_a_clear_error(tiny_clip, tmp_path):
    from transformers import AutoModelForSequenceClassification

    copy = shutil.copytree(tiny_clip, tmp_path / "clip_copy")
    _model(copy).save_pretrained(tmp_path / "saved")
    shutil.rmtree(copy)
    with pytest.raises(OSError, match="frozen CLIP referenced"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", local_files_only=True)


def test_a_referenced_local_clip_travels_with_the_pushed_model(tiny_clip, processor, tmp_path, monkeypatch):
    """A frozen CLIP referenced by a folder of the training machine is pushed as clip_model/ (base_model/clip_model/
    for adapters' base model, saved beside them or a local folder of its own), safetensors only, replacing what an
    earlier push left; the repo then loads where those folders do not exist, with the same logits, and a model
    loaded so and saved again still carries its CLIP."""
    import huggingface_hub
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    from hm_hf.hub import push_folder
    from hm_hf.inference.model_loading import folders_to_push, load_trained_model
    from hm_hf.peft import build_peft_config
    from hm_hf.training.model_loading import save_base_model
    from hub_cache import FakeHubRepo, offline_hub_repo

    machine_a = tmp_path / "machine_a"
    local_clip = shutil.copytree(tiny_clip, machine_a / "clip")
    (local_clip / "pytorch_model.bin").write_bytes(b"a pickle that must not travel")
    batch = _batch(processor)
    model = _model(local_clip, fusion="cross").eval()
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.normal_()
    model.save_pretrained(machine_a / "whole")
    expected = {"whole": model}
    for name in ("lora_inside", "lora_local_base"):  # random-init base saved beside the adapters / a local folder
        base = _model(local_clip)
        if name == "lora_inside":
            save_base_model(base, machine_a / name)
        else:
            base.save_pretrained(machine_a / "local_base")
        adapted = get_peft_model(base, build_peft_config(base, "lora", r=2, init_lora_weights=False)).eval()
        adapted.save_pretrained(machine_a / name)
        if name == "lora_local_base":
            config_file = machine_a / name / "adapter_config.json"
            config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                               "base_model_name_or_path": str(machine_a / "local_base")}))
        expected[name] = adapted
    with torch.no_grad():
        expected = {name: m(**batch).logits for name, m in expected.items()}

    assert folders_to_push(machine_a / "whole") == ({"clip_model": local_clip}, ["base_model/**"])
    assert folders_to_push(machine_a / "lora_inside") == ({"base_model/clip_model": local_clip}, ["clip_model/**"])
    assert folders_to_push(machine_a / "lora_local_base") == (
        {"base_model": machine_a / "local_base", "base_model/clip_model": local_clip}, ["clip_model/**"])
    stale = {"clip_model/config.json": b"{}", "base_model/clip_model/config.json": b"{}"}  # an earlier push's
    for name in expected:
        repo = FakeHubRepo(stale)
        monkeypatch.setattr(huggingface_hub, "HfApi", repo.api)
        extra, delete = folders_to_push(machine_a / name)
        push_folder(machine_a / name, f"org/{name}", extra_folders=extra, delete_patterns=delete)
        assert not any(path.endswith(".bin") and "clip_model" in path for path in repo.files)
        assert all(repo.files.get(path) != b"{}" for path in stale)  # replaced or deleted
        offline_hub_repo(tmp_path, monkeypatch, repo.write(tmp_path / "remote" / name), f"org/{name}")
    shutil.rmtree(machine_a)  # another machine
    with torch.no_grad():
        from_hub = AutoModelForSequenceClassification.from_pretrained("org/whole").eval()
        torch.testing.assert_close(from_hub(**batch).logits, expected["whole"])
        for name in ("lora_inside", "lora_local_base"):
            torch.testing.assert_close(load_trained_model(f"org/{name}").eval()(**batch).logits, expected[name])
        from_hub.save_pretrained(tmp_path / "saved_again")  # its CLIP is now the travelled copy, carried on
        assert set(folders_to_push(tmp_path / "saved_again")[0]) == {"clip_model"}
        again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved_again").eval()
        torch.testing.assert_close(again(**batch).logits, expected["whole"])


def test_pushing_a_model_whose_referenced_clip_is_gone_or_pickled_is_warned_about(tiny_clip, tmp_path, caplog):
    from hm_hf.inference.model_loading import folders_to_push

    copy = shutil.copytree(tiny_clip, tmp_path / "clip")
    _model(copy).save_pretrained(tmp_path / "saved")
    for weights in copy.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))  # as a pickled checkpoint would be
    assert folders_to_push(tmp_path / "saved")[0] == {"clip_model": copy}
    assert "has no safetensors weights" in caplog.text
    shutil.rmtree(copy)
    assert folders_to_push(tmp_path / "saved")[0] == {}
    assert f"references its frozen CLIP at {copy}, which is not on this machine" in caplog.text


def test_lora_adapters_and_base_model_reload(tiny_clip, processor, tmp_path):
    """The training job's save path: adapters + base_model/ (which stays small: CLIP is referenced)."""
    from peft import get_peft_model

    from hm_hf.peft import build_peft_config
    from hm_hf.inference.model_loading import BASE_MODEL_DIR, load_trained_model
    from hm_hf.training.model_loading import save_base_model

    base = _model(tiny_clip)
    save_base_model(base, tmp_path / "run")  # as the training job does, before peft wraps the model
    model = get_peft_model(base, build_peft_config(base, "lora", r=2, init_lora_weights=False)).eval()
    with torch.no_grad():  # "trained" head copies, which only the adapter folder holds
        for name, p in model.named_parameters():
            if "modules_to_save" in name:
                p.add_(0.1)
    batch = _batch(processor)
    model.save_pretrained(tmp_path / "run")
    assert not any(".clip." in k for k in _saved_keys(tmp_path / "run" / BASE_MODEL_DIR))
    reloaded = load_trained_model(str(tmp_path / "run")).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-5)


def test_collator_joins_the_text_pair_and_caps_at_77_tokens(processor):
    tokenizer = processor.tokenizer
    collator = ClipMemeCollator(tokenizer=tokenizer, text_pair_column="img_text", max_length=128)
    rows = [{"text": "friends at the picnic", "img_text": "garden"}, {"text": "word " * 200, "img_text": None}]
    batch = collator(rows)
    assert set(batch) == {"input_ids", "attention_mask"} and batch["input_ids"].shape[1] == 77
    joined = tokenizer("friends at the picnic garden")["input_ids"]
    assert batch["input_ids"][0, : len(joined)].tolist() == joined
    assert (batch["input_ids"][1] == tokenizer.eos_token_id).nonzero()[0].item() == 76  # truncated, eos kept


def _dataset(n=6):
    from datasets import Dataset, Features, Image as ImageFeature, Value

    rows = _rows(n)
    features = Features({"text": Value("string"), "image": ImageFeature(), "label": Value("int64")})
    return Dataset.from_dict({k: [r[k] for r in rows] for k in ("text", "image", "label")}, features=features)


def test_cached_embeddings_give_the_end_to_end_logits(tiny_clip, processor):
    model = _model(tiny_clip, fusion="cross").eval()
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    dataset = _dataset()
    cached = add_clip_embeddings(dataset, model, tokenizer, image_processor, batch_size=4)
    assert len(cached[0][IMAGE_EMBEDS]) == model.config.image_feature_dim
    collator = ClipMemeCollator(tokenizer=tokenizer, image_processor=image_processor)
    rows = [cached[i] for i in range(len(cached))]
    from_cache = collator(rows)
    assert set(from_cache) == {"image_embeds", "text_embeds", "labels"}
    end_to_end = collator([{k: v for k, v in r.items() if k not in (IMAGE_EMBEDS, TEXT_EMBEDS)} for r in rows])
    with torch.no_grad():
        assert torch.allclose(model(**from_cache).logits, model(**end_to_end).logits, atol=1e-5)
    assert torch.equal(from_cache["labels"], end_to_end["labels"])
    # fingerprinted by checkpoint: the same CLIP gives the same fingerprint, other weights another one
    again = add_clip_embeddings(dataset, model, tokenizer, image_processor, batch_size=4)
    assert again._fingerprint == cached._fingerprint
    other = _model(tiny_clip, fusion="cross")
    with torch.no_grad():
        other.hm_clip.clip.visual_projection.weight.add_(1.0)
    assert clip_fingerprint(other, tokenizer, image_processor) != clip_fingerprint(model, tokenizer, image_processor)
    assert add_clip_embeddings(dataset, other, tokenizer, image_processor)._fingerprint != cached._fingerprint


def test_cache_refuses_trainable_encoders(tiny_clip, processor):
    model = _model(tiny_clip, freeze_clip=False)
    with pytest.raises(ValueError, match="frozen"):
        add_clip_embeddings(_dataset(2), model, processor.tokenizer, processor.image_processor)


def test_checkpoint_staging_publishes_whole_folders_only(tmp_path):
    """What `make_tiny_clip` and the synthetic pre-training write appears in one rename or not at all."""
    from hm_hf.models.clip.tiny_clip import checkpoint_staging, is_clip_checkpoint

    with pytest.raises(RuntimeError):
        with checkpoint_staging(tmp_path / "clip") as staging:
            (staging / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the staging folder
    with checkpoint_staging(tmp_path / "clip") as staging:
        for name in ("config.json", "processor_config.json"):
            (staging / name).write_text("{}")
    assert is_clip_checkpoint(tmp_path / "clip") and [p.name for p in tmp_path.iterdir()] == ["clip"]
