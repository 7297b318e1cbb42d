"""The model card names the data set a model was actually trained on."""

import yaml

from hm_hf.synthetic.data import SYNTHETIC_MARKER, is_synthetic, make_hmd, make_mmhs
from hm_hf.training.card import hub_base_model, write_model_card


def _card(tmp_path, dataset: str, synthetic: bool) -> tuple[dict, str]:
    path = write_model_card(tmp_path, model_name="org/m", model_type="visual_bert", base_model=None, dataset=dataset,
                            peft_method="none", results={"dev_seen": {"auroc": 0.7, "accuracy": 0.6, "f1": 0.5}},
                            figures=[], trainable=10, total=100, recipe_text=None, command="x", synthetic=synthetic)
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1]), text


def test_a_real_data_set_is_named_with_its_hub_id_and_content_warning(tmp_path):
    header, text = _card(tmp_path, "hmd", synthetic=False)
    assert header["datasets"] == ["facebook/hateful_memes"] and "synthetic-data" not in header["tags"]
    assert "Content warning" in text and "on Hateful Memes" in text
    assert header["model-index"][0]["results"][0]["dataset"]["type"] == "facebook/hateful_memes"


def test_a_synthetic_run_is_named_as_synthetic(tmp_path):
    header, text = _card(tmp_path, "mmhs", synthetic=True)
    assert "datasets" not in header and "synthetic-data" in header["tags"]
    assert header["model-index"][0]["results"][0]["dataset"]["type"] == "hm_hf-synthetic-mmhs"
    assert "Content warning" not in text and "hateful images" not in text
    assert "synthetic MMHS150K-format data" in text and "its output on real memes means nothing" in text


def test_the_generators_mark_their_folders(tmp_path):
    make_hmd(tmp_path / "hmd", splits={"train": 2})
    make_mmhs(tmp_path / "mmhs", splits={"train": 2})
    assert is_synthetic(tmp_path / "hmd") and is_synthetic(tmp_path / "mmhs")
    assert (tmp_path / "hmd" / SYNTHETIC_MARKER).is_file() and not is_synthetic(tmp_path / "hmd" / "img")


def test_a_text_pair_models_card_shows_how_to_give_both_texts(tmp_path):
    """An MMHS150K model trained on the tweet's text + the image's text: the card's example passes both (the
    first text is the tweet's, not the text on the image)."""
    path = write_model_card(tmp_path, model_name="org/m", model_type="visual_bert", base_model=None, dataset="mmhs",
                            peft_method="none", results={"val": {"auroc": 0.7, "accuracy": 0.6, "f1": 0.5}},
                            figures=[], trainable=10, total=100, recipe_text=None, command="x", text_pair=True)
    usage = path.read_text(encoding="utf-8").split("## How to use")[1].split("## Training")[0]
    assert "text_pairs=" in usage and "tweet" in usage and "--text-pair" in usage
    _, single = _card(tmp_path / "single", "hmd", synthetic=False)
    assert "text_pairs=" not in single.split("## How to use")[1].split("## Training")[0]


def test_the_cards_example_loads_the_model_from_where_it_is(tmp_path):
    """A run without a Hub id: the card's example names the output folder (outputs/synthetic-tiny), which
    from_pretrained finds, not its bare name, which it does not; with a Hub id, the Hub id."""
    common = dict(model_type="concat", base_model=None, dataset="hmd", peft_method="none", results={}, figures=[],
                  trainable=1, total=1, recipe_text=None, command="x")
    local = write_model_card(tmp_path / "a", model_name="synthetic-tiny", load_name="outputs/synthetic-tiny",
                             **common).read_text(encoding="utf-8")
    assert 'from_pretrained("outputs/synthetic-tiny")' in local and "# synthetic-tiny" in local
    hub = write_model_card(tmp_path / "b", model_name="org/m", **common).read_text(encoding="utf-8")
    assert 'from_pretrained("org/m")' in hub


def test_the_base_model_is_a_hub_id_never_a_local_folder(tmp_path, monkeypatch):
    """The Hub accepts only a model id as the card's base_model: a run that started from a local folder (a
    converted checkpoint, the tiny CLIP) names the first Hub id it used, or none."""
    (tmp_path / "data" / "uniter-base-converted").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_base_model("data/uniter-base-converted", None, "bert-base-uncased") == "bert-base-uncased"
    assert hub_base_model(None, "openai/clip-vit-large-patch14-336") == "openai/clip-vit-large-patch14-336"
    assert hub_base_model("data/uniter-base-converted", "../x//y", str(tmp_path)) is None
    path = write_model_card(tmp_path / "out", model_name="org/m", model_type="rgcl",
                            base_model=hub_base_model(None, "openai/clip-vit-large-patch14-336"), dataset="hmd",
                            peft_method="none", results={}, figures=[], trainable=1, total=2, recipe_text=None,
                            command="x")
    assert yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])["base_model"] == \
        "openai/clip-vit-large-patch14-336"


def test_a_hub_cache_snapshot_names_its_repo_as_the_base_model(tmp_path):
    """Offline, a run reads the base checkpoint from the Hub cache: the card still names the repo, never the
    cache folder; a folder that only looks alike (no snapshots/ level) names nothing."""
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-large-patch14-336" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    legacy = tmp_path / "hub" / "models--bert-base-uncased" / "snapshots" / "4567def"
    legacy.mkdir(parents=True)
    lookalike = tmp_path / "models--openai--clip-vit-base-patch32"
    lookalike.mkdir()
    assert hub_base_model(None, str(snapshot)) == "openai/clip-vit-large-patch14-336"
    assert hub_base_model(str(lookalike), str(legacy)) == "bert-base-uncased"
    assert hub_base_model(str(lookalike)) is None


def test_no_access_token_reaches_the_card(tmp_path):
    """The card is pushed with the model: a --hub_token on the command line or hub_token in the recipe is masked."""
    token = "hf_" + "Secret0" * 5
    path = write_model_card(tmp_path, model_name="org/m", model_type="concat", base_model=None, dataset="hmd",
                            peft_method="none", results={}, figures=[], trainable=1, total=1,
                            recipe_text=f"hub_model_id: org/m\nhub_token: {token}\n",
                            command=f"accelerate launch recipes/train_peft.py r.yaml --hub_token {token} --hub_token={token}")
    text = path.read_text(encoding="utf-8")
    assert token not in text and "Secret0" not in text
    assert "--hub_token ***" in text and "hub_token: ***" in text and "hub_model_id: org/m" in text


def test_model_index_metric_types_are_hub_metric_ids(tmp_path):
    """model-index `type` is a metric id of https://hf.co/metrics, like the card's own `metrics:` list."""
    from huggingface_hub.repocard_data import model_index_to_eval_results

    header, _ = _card(tmp_path / "binary", "hmd", synthetic=False)
    _, results = model_index_to_eval_results(header["model-index"])
    assert [r.metric_type for r in results] == ["roc_auc", "accuracy", "f1"]
    assert {r.metric_type for r in results} <= set(header["metrics"])
    path = write_model_card(tmp_path / "fg", model_name="org/m", model_type="visual_bert", base_model=None,
                            dataset="hmd_fine_grained", peft_method="none",
                            results={"dev": {"roc_auc_micro": 0.8, "f1_micro": 0.5}}, figures=[], trainable=1,
                            total=1, recipe_text=None, command="x", problem_type="multi_label_classification",
                            task="pc")
    _, results = model_index_to_eval_results(yaml.safe_load(path.read_text().split("---")[1])["model-index"])
    assert [(r.metric_type, r.metric_args) for r in results] == [("roc_auc", {"average": "micro"}),
                                                                 ("f1", {"average": "micro"})]
