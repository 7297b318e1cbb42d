"""The Gradio Space (spaces/hateful_memes) and `hm-hf push-space` (hm_hf.space).

The app runs on 127.0.0.1 in this process (`launch(prevent_thread_lock=True)`) with a tiny random model;
requests go through gradio_client as a user's would. The Hub is never reached: push-space is tested with
HfApi's two network calls replaced by local stand-ins.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import build_tiny_model, make_data, needs_ppocr, pixel_bomb_png  # noqa: E402

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "spaces" / "hateful_memes"


def load_app_module():
    spec = importlib.util.spec_from_file_location("hateful_memes_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_module():
    return load_app_module()


@pytest.fixture(scope="module")
def space_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    memes = make_data(root, n_train=16, n_dev=4)
    texts = [m.text for split in memes.values() for m in split]
    build_tiny_model(root / "model", texts)
    return root / "model"


@pytest.fixture(scope="module")
def meme_app(app_module, space_model):
    return app_module.MemeApp(app_module.load_pipeline(str(space_model), device="cpu"))


@pytest.fixture(scope="module")
def served(app_module, meme_app):
    """The app served on a loopback port; yields (url, app module, pipeline)."""
    demo = app_module.build_demo(meme_app.pipe, model_name="tiny test model")
    port = free_port()
    kwargs = app_module.launch_kwargs(port=port)
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{port}/", demo, meme_app.pipe
    finally:
        demo.close()


def example_paths():
    return sorted(SPACE.glob("examples/*.png"))


# --------------------------------------------------------------------------------------------- Space files


def test_space_readme_header_and_requirements():
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(text.split("---")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == "6.31.0"  # the gradio these tests were run with
    assert re.fullmatch(r"3\.\d+", str(header["python_version"]))
    assert (SPACE / header["app_file"]).is_file() and header["license"] == "apache-2.0"
    assert len(header["models"]) == 1 and "/" in header["models"][0]
    assert "content warning" in text.lower()
    requirements = (SPACE / "requirements.txt").read_text().split()
    assert any(r.startswith("hm_hf[") and "==" in r and "demo" in r for r in requirements)
    assert f"gradio=={header['sdk_version']}" in requirements
    assert (SPACE / "packages.txt").read_text().split() == ["tesseract-ocr"]


def test_examples_are_the_synthetic_generators(tmp_path):
    from hm_hf.synthetic.examples import make_examples

    made = make_examples(tmp_path)
    committed = example_paths()
    assert [p.name for p in made] == sorted(p.name for p in committed) or sorted(p.name for p in made) == [
        p.name for p in committed
    ]
    for path in made:
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(SPACE / "examples" / path.name)))
        assert path.stat().st_size < 50_000


def test_default_model_choice(app_module, monkeypatch, tmp_path):
    monkeypatch.delenv("HM_HF_MODEL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert app_module.default_model().endswith("outputs/synthetic-tiny")  # the README main job's output
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert app_module.default_model() == yaml.safe_load((SPACE / "README.md").read_text().split("---")[1])["models"][0]
    monkeypatch.setenv("HM_HF_MODEL", "org/other")
    assert app_module.default_model() == "org/other"


def test_default_model_runs_offline_with_the_synthetic_detector(app_module, space_model, monkeypatch, tmp_path):
    """`python spaces/hateful_memes/app.py` right after the README's main job: its model, no Hub needed."""
    import shutil

    from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME
    from hm_hf.synthetic.detector import SyntheticShapeDetector

    target = tmp_path / "outputs" / "synthetic-tiny"
    shutil.copytree(space_model, target, ignore=shutil.ignore_patterns(PIPELINE_CONFIG_NAME))
    monkeypatch.delenv("HM_HF_MODEL", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Path(app_module.default_model()) == target
    pipe = app_module.load_pipeline(app_module.default_model(), device="cpu")
    assert isinstance(pipe.detector, SyntheticShapeDetector)
    assert 0.0 <= pipe(str(example_paths()[0]), texts="a caption")["probability"] <= 1.0


def test_a_model_trained_on_synthetic_data_says_so_next_to_its_name(app_module, space_model, tmp_path):
    """The model folder records it (its processor settings: here an older folder's hm_hf_pipeline.json); the page
    shows it."""
    import json
    import shutil

    from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME

    folder = tmp_path / "synthetic-model"
    shutil.copytree(space_model, folder)
    settings = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())
    (folder / PIPELINE_CONFIG_NAME).write_text(json.dumps({**settings, "trained_on_synthetic_data": True}))
    pipe = app_module.load_pipeline(str(folder), device="cpu")
    line = app_module.model_line(pipe, "org/tiny")
    assert line.startswith("Model: `org/tiny`") and "synthetic data" in line and "means nothing" in line
    demo = app_module.build_demo(pipe, model_name="org/tiny")
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert line in shown
    example = {"path": str(example_paths()[0])}
    assert "means nothing" in app_module.MemeApp(pipe).classify(example, "a caption")[3]
    # A model trained on real data shows its name alone.
    real = app_module.load_pipeline(str(space_model), device="cpu")
    assert app_module.model_line(real, "org/tiny") == "Model: `org/tiny`"
    assert "means nothing" not in app_module.MemeApp(real).classify(example, "a caption")[3]


def test_a_space_pinned_to_a_model_revision_loads_that_revision(app_module, space_model, tmp_path, monkeypatch):
    """HM_HF_MODEL_REVISION / --revision: the app reads the model repo at that revision (here the only one: the
    repo has no main, so an unpinned load fails)."""
    from hub_cache import offline_hub_repo

    offline_hub_repo(tmp_path, monkeypatch, space_model, "org/space-model", ref="v1", commit="3" * 40)
    pipe = app_module.load_pipeline("org/space-model", device="cpu", revision="v1")
    assert pipe.settings.max_text_length == 32
    with pytest.raises(OSError):
        app_module.load_pipeline("org/space-model", device="cpu")
    loaded = {}
    monkeypatch.setattr(app_module, "load_pipeline", lambda model, **kwargs: loaded.update(kwargs) or 1 / 0)
    monkeypatch.setenv("HM_HF_MODEL_REVISION", "v1")
    with pytest.raises(ZeroDivisionError):  # stops before serving
        app_module.main(["--model", "org/space-model"])
    assert loaded["revision"] == "v1"


def test_missing_default_model_is_a_clear_message(app_module, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HM_HF_MODEL", raising=False)
    assert app_module.main(["--model", str(tmp_path / "outputs/synthetic-tiny")]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "README's main job" in err


def test_launch_settings_are_safe(app_module, monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    kwargs = app_module.launch_kwargs()
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False
    assert kwargs["allowed_paths"] == [str(SPACE / "examples")]
    assert kwargs["max_file_size"] == app_module.MAX_FILE_SIZE <= 10 * 2**20
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    source = (SPACE / "app.py").read_text()
    assert "share=True" not in source


# -------------------------------------------------------------------------------------- the handlers


def test_classify_matches_the_pipeline(meme_app):
    example = example_paths()[0]
    decision, confidences, annotated, details = meme_app.classify({"path": str(example)}, "some meme text")
    expected = meme_app.pipe(str(example), texts="some meme text")["probability"]
    assert confidences["hateful"] == pytest.approx(expected, abs=1e-6)
    assert decision == meme_app.pipe(str(example), texts="some meme text")["label_name"]
    assert f"{expected:.3f}" in details
    image, boxes = annotated["value"]
    assert image.size == (320, 240) and boxes and all(len(box) == 4 for box, _ in boxes)


def test_the_page_says_how_the_model_decides(app_module, space_model, meme_app, tmp_path):
    """With a decision policy the answer names the threshold, its rule and split, and that the probability is
    calibrated; without one, that it is the model's own, uncalibrated probability at 0.5."""
    import shutil

    from hm_hf.metrics.policy import DecisionPolicy

    example = {"path": str(example_paths()[0])}
    plain = meme_app.classify(example, "a caption")[3]
    assert "threshold 0.5" in plain and "not calibrated" in plain
    folder = tmp_path / "calibrated"
    shutil.copytree(space_model, folder)
    DecisionPolicy(temperature=1.7, threshold=0.42, rule="fpr@0.01", fitted_on="dev_seen",
                   calibrated=True).save_pretrained(folder)
    pipe = app_module.load_pipeline(str(folder), device="cpu")
    _, confidences, _, details = app_module.MemeApp(pipe).classify(example, "a caption")
    line = app_module.decision_line(pipe)
    assert line in details and "threshold 0.42, chosen by the rule `fpr@0.01` on dev_seen" in line
    assert "calibrated probability (temperature scaling, T = 1.7, fitted on dev_seen)" in line
    expected = pipe(example["path"], texts="a caption")
    assert confidences["hateful"] == pytest.approx(expected["probability"], abs=1e-6)
    assert f"({expected['label_name']})" in details
    demo = app_module.build_demo(pipe, model_name="org/tiny")
    assert line in [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]  # shown on the page too


def _gr_error(call) -> str:
    with pytest.raises(gr.Error) as info:
        call()
    return info.value.message


def test_bad_uploads_get_a_plain_message(meme_app, app_module, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is a text file")
    assert "not an image" in _gr_error(lambda: meme_app.classify({"path": str(not_image)}, "text"))
    png = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 200, 10)).save(png, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    assert "truncated" in _gr_error(lambda: meme_app.classify({"path": str(truncated)}, "text"))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(pixel_bomb_png(8_000, 8_000))  # 64 Mpx in 70 bytes
    assert "more than the limit" in _gr_error(lambda: meme_app.classify({"path": str(bomb)}, "text"))
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(app_module.MAX_FILE_SIZE + 1)
    assert "the limit is" in _gr_error(lambda: meme_app.classify({"path": str(big)}, "text"))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty" in _gr_error(lambda: meme_app.classify({"path": str(empty)}, "text"))
    assert "Upload an image" in _gr_error(lambda: meme_app.classify(None, "text"))
    good = tmp_path / "good.png"
    Image.new("RGB", (300, 200), (10, 200, 10)).save(good)
    assert "must be text, not int" in _gr_error(lambda: meme_app.classify({"path": str(good)}, 5))  # an API client
    assert "not valid Unicode" in _gr_error(lambda: meme_app.classify({"path": str(good)}, "a\ud800b"))


def test_empty_text_asks_for_text(meme_app, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 120), (255, 255, 255)).save(blank)  # no text to OCR either
    message = _gr_error(lambda: meme_app.classify({"path": str(blank)}, "   "))
    assert "type the meme's text" in message


@needs_ppocr
def test_upload_prefills_the_text_by_ocr(app_module, meme_app):
    """The Space reads the caption with the processor's engine, PP-OCR, and names it on the page."""
    example = example_paths()[0]
    text = meme_app.read_text({"path": str(example)})
    assert len(text.split()) >= 3 and text == text.strip()
    assert text == meme_app.pipe(str(example))["text"]  # what the model reads when the box is left empty
    assert meme_app.read_text(None) == ""
    line = app_module.ocr_line(meme_app.pipe)
    assert line.startswith("OCR: `ppocr`") and "rapidocr" in line
    demo = app_module.build_demo(meme_app.pipe, model_name="org/tiny")
    assert line in [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]


# ------------------------------------------------------------------------------------ served over HTTP


def test_served_app_classifies_and_refuses_bad_input(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _, pipe = served
    client = Client(url, verbose=False, download_files=False)
    example = str(example_paths()[1])
    decision, confidences, _, details = client.predict(handle_file(example), "a caption", api_name="/classify")
    expected = pipe(example, texts="a caption")["probability"]
    hateful = next(c["confidence"] for c in confidences["confidences"] if c["label"] == "hateful")
    assert hateful == pytest.approx(expected, abs=1e-5) and "Hateful probability" in details
    assert decision["label"] == pipe(example, texts="a caption")["label_name"]  # the decision, beside the bars
    not_image = tmp_path / "fake.png"
    not_image.write_bytes(b"GIF89a but not really")
    with pytest.raises(AppError, match="not an image that can be read") as info:
        client.predict(handle_file(str(not_image)), "text", api_name="/classify")
    assert "Traceback" not in str(info.value)


def test_served_app_serves_only_its_examples_and_limits_uploads(served, tmp_path):
    import httpx

    url, _, _ = served
    example = example_paths()[0]
    assert httpx.get(f"{url}gradio_api/file={example}").status_code == 200
    for secret in ("/etc/passwd", str(REPO / "setup.cfg"), str(SPACE / "app.py")):
        assert httpx.get(f"{url}gradio_api/file={secret}").status_code in (403, 404)
    big = io.BytesIO(b"\0" * (9 * 2**20))
    response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=30)
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_concurrent_requests_succeed_or_meet_the_full_queue(served):
    """32 requests at once: each succeeds or gets the bounded queue's "full" answer; none errors."""
    from gradio_client import Client, handle_file

    url, _, _ = served
    client = Client(url, verbose=False, download_files=False)
    example = handle_file(str(example_paths()[2]))
    jobs = [client.submit(example, f"caption number {i}", api_name="/classify") for i in range(32)]
    outcomes = {"ok": 0, "full": 0}
    for job in jobs:
        try:
            _, confidences, _, _ = job.result(timeout=120)
            assert {c["label"] for c in confidences["confidences"]} == {"hateful", "not hateful"}
            outcomes["ok"] += 1
        except Exception as err:  # noqa: BLE001 - anything but "queue full" fails the test below
            assert "queue is full" in str(err).lower(), f"unexpected error: {err!r}"
            outcomes["full"] += 1
    assert outcomes["ok"] >= 16 and outcomes["ok"] + outcomes["full"] == 32, outcomes


@pytest.mark.slow
def test_memory_stays_flat_over_200_requests(served):
    """200 sequential requests through the queue (gradio's HTTP API, the image uploaded once): RSS stays flat."""
    import httpx
    import psutil

    url, _, _ = served
    example = example_paths()[3]
    process = psutil.Process()  # the server runs in this process
    rss = []
    with httpx.Client(timeout=60) as http:
        uploaded = http.post(f"{url}gradio_api/upload", files={"files": (example.name, example.read_bytes())}).json()
        image = {"path": uploaded[0], "orig_name": example.name, "meta": {"_type": "gradio.FileData"}}
        for i in range(200):
            event = http.post(f"{url}gradio_api/call/classify", json={"data": [image, f"caption {i % 7}", ""]}).json()
            reply = http.get(f"{url}gradio_api/call/classify/{event['event_id']}").text
            assert "event: complete" in reply and "Hateful probability" in reply, reply[:300]
            if i in (39, 199):
                gc.collect()
                rss.append(process.memory_info().rss)
    growth = rss[1] - rss[0]
    print(f"RSS growth over 160 requests: {growth / 2**20:.1f} MiB")
    assert growth < 40 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 160 requests"


# --------------------------------------------------------------------------------------------- push-space


def _not_found(repo_id: str):
    """The error HfApi.model_info raises for a repo that does not exist (or that the token cannot see)."""
    import importlib

    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])  # the HTTP client huggingface_hub uses
    request = http.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
    return errors.RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {request.url}",
                                          response=http.Response(404, request=request))


class FakeHub:
    """Stand-ins for HfApi.model_info / create_repo / upload_folder: record the calls, copy the files locally.

    `models`: {model id: {"private": ..., "gated": ...}} the Hub holds (None: any model, public)."""

    def __init__(self, root: Path, fail_with: str | None = None, models: dict | None = None,
                 lookup_error: Exception | None = None):
        self.root, self.fail_with, self.models, self.calls = root, fail_with, models, []
        self.lookup_error = lookup_error

    def install(self, monkeypatch):
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import ModelInfo

        hub = self

        def model_info(api, repo_id, **kwargs):
            hub.calls.append(("model_info", repo_id, api.token))
            if hub.lookup_error is not None:
                raise hub.lookup_error
            if hub.models is not None and repo_id not in hub.models:
                raise _not_found(repo_id)
            return ModelInfo(id=repo_id, **{"private": False, "gated": False, **(hub.models or {}).get(repo_id, {})})

        def create_repo(api, repo_id, **kwargs):
            hub.calls.append(("create_repo", repo_id, kwargs))
            if hub.fail_with:
                raise RuntimeError(hub.fail_with)

        def upload_folder(api, *, repo_id, folder_path, **kwargs):
            import shutil

            hub.calls.append(("upload_folder", repo_id, kwargs))
            shutil.copytree(folder_path, hub.root / repo_id, dirs_exist_ok=True)

        monkeypatch.setattr(HfApi, "model_info", model_info)
        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self

    def pushed(self) -> list:
        """The create_repo / upload_folder calls (the model look-up left out)."""
        return [call for call in self.calls if call[0] != "model_info"]


def test_push_space_uploads_a_private_space_with_the_model(tmp_path, monkeypatch, capsys):
    from hm_hf.space import cli

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/meme-model", "--space-dir", str(SPACE)]) == 0
    out = capsys.readouterr()
    assert "private" in out.out and "hf_" not in out.out + out.err and "warning" not in out.err  # a public model
    assert hub.calls[0] == ("model_info", "my-org/meme-model", "hf_" + "x" * 34)  # looked up first, with the token
    (_, repo, create_kwargs), (_, _, upload_kwargs) = hub.pushed()
    assert repo == "my-org/meme-demo" and create_kwargs["private"] is True
    assert create_kwargs["repo_type"] == "space" and create_kwargs["space_sdk"] == "gradio"
    assert create_kwargs["space_variables"] == [{"key": "HM_HF_MODEL", "value": "my-org/meme-model"}]
    uploaded = hub.root / "my-org/meme-demo"
    header = yaml.safe_load((uploaded / "README.md").read_text().split("---")[1])
    assert header["models"] == ["my-org/meme-model"] and header["sdk_version"] == "6.31.0"
    body = (SPACE / "README.md").read_text().split("---", 2)[2]
    assert (uploaded / "README.md").read_text().split("---", 2)[2] == body
    names = sorted(p.relative_to(uploaded).as_posix() for p in uploaded.rglob("*") if p.is_file())
    assert [n for n in names if not n.startswith("hm_hf/")] == sorted(
        ["README.md", "app.py", "packages.txt", "requirements.txt"] + [f"examples/{p.name}" for p in example_paths()])
    assert "hm_hf/__init__.py" in names and "hm_hf/space.py" in names
    hub.calls.clear()
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/meme-model", "--space-dir", str(SPACE),
                "--public"]) == 0
    assert hub.pushed()[0][2]["private"] is False


@pytest.mark.parametrize("access", ["private", "gated"])
def test_push_space_warns_that_a_private_or_gated_model_needs_the_hf_token_secret(tmp_path, monkeypatch, capsys,
                                                                                 access):
    """The Space loads its model with from_pretrained: a private (or gated) model only with a secret HF_TOKEN
    that can read it. Said before the upload, with the Space's settings page; the Space is still pushed."""
    from hm_hf.space import cli

    token = "hf_" + "T0ken" * 7
    value = {"private": True} if access == "private" else {"gated": "manual"}
    hub = FakeHub(tmp_path / "hub", models={"my-org/meme-model": value}).install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", token)
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/meme-model", "--space-dir", str(SPACE)]) == 0
    out = capsys.readouterr()
    assert f"warning: the model my-org/meme-model is {access}" in out.err
    assert "secret HF_TOKEN" in out.err and "https://huggingface.co/spaces/my-org/meme-demo/settings" in out.err
    assert token not in out.out + out.err and "T0ken" not in out.out + out.err
    assert [call[0] for call in hub.calls] == ["model_info", "create_repo", "upload_folder"]
    assert (tmp_path / "hub" / "my-org/meme-demo" / "app.py").is_file()


def test_push_space_refuses_a_model_that_is_not_on_the_hub(tmp_path, monkeypatch, capsys):
    """A Space whose model does not exist would fail at start-up: an error naming it and saying to push it first,
    and nothing is uploaded."""
    from hm_hf.space import cli

    token = "hf_" + "N0pe" * 9
    hub = FakeHub(tmp_path / "hub", models={}).install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", token)
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/not-pushed", "--space-dir", str(SPACE)]) == 2
    err = capsys.readouterr().err
    assert "'my-org/not-pushed' is not a model on the Hub" in err and "push the model first" in err
    assert token not in err and hub.pushed() == []


def test_push_space_says_when_the_model_could_not_be_looked_up(tmp_path, monkeypatch, capsys):
    """Offline (or no network): the look-up fails before anything is uploaded, and the message says so."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    from hm_hf.space import cli

    token = "hf_" + "0ffline" * 5
    hub = FakeHub(tmp_path / "hub", lookup_error=OfflineModeIsEnabled(f"offline; token {token}")).install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", token)
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/meme-model", "--space-dir", str(SPACE)]) == 1
    err = capsys.readouterr().err
    assert "could not look up the model my-org/meme-model" in err and "nothing was uploaded" in err
    assert "OfflineModeIsEnabled" in err and "upload failed" not in err and token not in err
    assert hub.pushed() == []


def test_push_space_never_prints_the_token(tmp_path, monkeypatch, capsys):
    from hm_hf.space import cli

    token = "hf_" + "S3cret" * 6
    FakeHub(tmp_path, fail_with=f"401 Unauthorized for token {token}").install(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", token)
    assert cli(["--repo", "org/space", "--model", "org/model", "--space-dir", str(SPACE)]) == 1
    captured = capsys.readouterr()
    assert "upload failed" in captured.err and "401" in captured.err
    assert token not in captured.out + captured.err and "S3cret" not in captured.out + captured.err


def test_push_space_refuses_bad_arguments(tmp_path, monkeypatch, capsys):
    from hm_hf.space import cli

    hub = FakeHub(tmp_path).install(monkeypatch)
    local_model = tmp_path / "outputs" / "model"
    local_model.mkdir(parents=True)
    assert cli(["--repo", "org/space", "--model", str(local_model), "--space-dir", str(SPACE)]) == 2
    assert "must be a Hub model id" in capsys.readouterr().err
    assert cli(["--repo", "not a repo", "--model", "org/model", "--space-dir", str(SPACE)]) == 2
    assert cli(["--repo", "org/space", "--model", "org/model", "--space-dir", str(tmp_path)]) == 2
    assert "is not the Space folder" in capsys.readouterr().err
    latin1 = tmp_path / "latin1_space"
    shutil.copytree(SPACE, latin1)
    (latin1 / "README.md").write_bytes((SPACE / "README.md").read_bytes() + "caf\xe9\n".encode("latin-1"))
    assert cli(["--repo", "org/space", "--model", "org/model", "--space-dir", str(latin1)]) == 2
    assert f"{latin1 / 'README.md'}: not UTF-8 text" in capsys.readouterr().err
    assert hub.calls == []  # nothing was sent


def _shown(demo, outputs):
    """What the page's Prediction and Probabilities labels show for a handler's outputs (their postprocess)."""
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    decision, confidences = blocks["prediction"].postprocess(outputs[0]), blocks["scores"].postprocess(outputs[1])
    return decision.label, {c.label: c.confidence for c in confidences.confidences}


def test_the_label_shows_the_decision_at_the_models_threshold(app_module, space_model, meme_app, tmp_path):
    """A meme whose probability is on the other side of the threshold from 0.5: the label's heading is the
    model's decision (flagged at the threshold), not the more probable class; the bars are the probabilities."""
    import shutil

    from hm_hf.metrics.policy import DecisionPolicy

    example = {"path": str(example_paths()[0])}
    p = meme_app.pipe(example["path"], texts="a caption")["probability"]
    threshold = p / 2 if p < 0.5 else (p + 1) / 2  # flags a meme below 0.5, or passes one above it
    folder = tmp_path / "policy"
    shutil.copytree(space_model, folder)
    DecisionPolicy(threshold=threshold, rule="max_f1", fitted_on="dev_seen").save_pretrained(folder)
    pipe = app_module.load_pipeline(str(folder), device="cpu")
    heading, bars = _shown(app_module.build_demo(pipe), app_module.MemeApp(pipe).classify(example, "a caption"))
    decided = pipe(example["path"], texts="a caption")
    assert decided["label_name"] == ("hateful" if p < 0.5 else "not hateful")
    assert heading == decided["label_name"]
    assert bars == pytest.approx({"hateful": p, "not hateful": 1 - p}, abs=1e-6)


def test_a_multi_label_models_label_shows_each_label_at_its_threshold(app_module, space_model):
    """A fine-grained model: the heading lists the labels above their thresholds (or none), the bars every
    label's score."""
    from transformers import AutoTokenizer

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
    from hm_hf.pipeline import HatefulMemePipeline
    from hm_hf.processing import MemeProcessor
    from hm_hf.synthetic.detector import SyntheticShapeDetector

    base = HmConcatForHatefulMemes.from_pretrained(str(space_model))
    names = ["pc_empty", "race", "religion"]
    config = HmConcatConfig(**{**base.config.to_dict(), "num_labels": 3, "problem_type": "multi_label_classification"})
    model = HmConcatForHatefulMemes(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(space_model))
    example = {"path": str(example_paths()[0])}

    def shown_for(thresholds):
        processor = MemeProcessor(model_inputs=("text", "regions"), tokenizer=tokenizer, detector="synthetic",
                                  max_text_length=32, multi_label=True, label_names=names,
                                  label_thresholds=thresholds)
        pipe = HatefulMemePipeline(model, processor, detector=SyntheticShapeDetector(), device="cpu")
        outputs = app_module.MemeApp(pipe).classify(example, "a caption")
        return pipe(example["path"], texts="a caption"), _shown(app_module.build_demo(pipe), outputs)

    result, _ = shown_for(None)
    scores = result["scores"]
    top = max(scores, key=scores.get)
    # every label's threshold just above its score but the lowest one's: that one alone is predicted
    low = min(scores, key=scores.get)
    thresholds = [min(1.0, scores[n] + 1e-3) if n != low else scores[n] / 2 for n in names]
    result, (heading, bars) = shown_for(thresholds)
    assert result["labels"] == [low] and heading == low != top
    assert bars == pytest.approx(scores, abs=1e-6)
    result, (heading, _) = shown_for([1.0, 1.0, 1.0])
    assert result["labels"] == [] and heading == "none"


def test_a_text_pair_model_gets_a_second_box(app_module, space_model, meme_app, tmp_path):
    """A model trained on a text pair (MMHS150K: the tweet + the image's own text): the page shows a box for
    each, OCR fills the image-text box, and the model reads both; a one-text model shows one box."""
    import json
    import shutil

    from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME

    def boxes(demo):
        return {b.elem_id: b for b in demo.blocks.values() if isinstance(b, gr.Textbox)}

    single = boxes(app_module.build_demo(meme_app.pipe))
    assert single["meme-text"].visible and not single["meme-text-pair"].visible
    folder = tmp_path / "pair-model"
    shutil.copytree(space_model, folder)
    settings = json.loads((folder / PIPELINE_CONFIG_NAME).read_text())
    (folder / PIPELINE_CONFIG_NAME).write_text(json.dumps({**settings, "text_pair": True}))
    pipe = app_module.load_pipeline(str(folder), device="cpu")
    demo = app_module.build_demo(pipe)
    shown = boxes(demo)
    assert shown["meme-text"].visible and shown["meme-text-pair"].visible
    assert "OCR" in shown["meme-text-pair"].label and "OCR" not in shown["meme-text"].label
    (upload,) = [d for d in demo.fns.values() if d.api_name == "read_text"]
    assert [o._id for o in upload.outputs] == [shown["meme-text-pair"]._id]  # OCR fills the image-text box
    example = {"path": str(example_paths()[0])}
    _, confidences, _, details = app_module.MemeApp(pipe).classify(example, "the tweet", "words on the image")
    expected = pipe(example["path"], texts="the tweet", text_pairs="words on the image")
    assert confidences["hateful"] == pytest.approx(expected["probability"], abs=1e-6)
    assert "“the tweet”" in details and "“words on the image”" in details
    # no OCR engine here and no text on the image: the post's text alone is classified, not "the model failed"
    from hm_hf.ocr import OcrUnavailableError

    def no_ocr(image):
        raise OcrUnavailableError("no OCR engine installed")

    pipe.processor.read_text = no_ocr
    try:
        _, confidences, _, details = app_module.MemeApp(pipe).classify(example, "the tweet", "")
    finally:
        del pipe.processor.read_text
    expected = pipe(example["path"], texts="the tweet", text_pairs="")
    assert confidences["hateful"] == pytest.approx(expected["probability"], abs=1e-6)


def test_push_space_finds_the_space_folder_from_any_directory(tmp_path, monkeypatch, capsys):
    """`hm-hf push-space` without --space-dir, run from another directory than the repository's root: the
    Space folder of this hm_hf checkout is used (it was looked for in the working directory)."""
    from hm_hf.space import cli

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert cli(["--repo", "my-org/meme-demo", "--model", "my-org/meme-model"]) == 0, capsys.readouterr().err
    assert (hub.root / "my-org/meme-demo" / "app.py").read_bytes() == (SPACE / "app.py").read_bytes()


def test_a_multi_class_model_without_a_policy_is_said_to_take_the_most_probable_class(app_module, space_model):
    """A 6-way model (MMHS150K's fine labels) saved without decision_policy.json decides by arg-max: the page
    must not say "threshold 0.5"."""
    from transformers import AutoTokenizer

    from hm_hf.models.concat import HmConcatConfig, HmConcatForHatefulMemes
    from hm_hf.pipeline import HatefulMemePipeline
    from hm_hf.processing import MemeProcessor
    from hm_hf.synthetic.detector import SyntheticShapeDetector

    base = HmConcatForHatefulMemes.from_pretrained(str(space_model))
    settings = {k: v for k, v in base.config.to_dict().items() if k not in ("id2label", "label2id")}
    model = HmConcatForHatefulMemes(HmConcatConfig(**settings, num_labels=6)).eval()
    processor = MemeProcessor(model_inputs=("text", "regions"), tokenizer=AutoTokenizer.from_pretrained(str(space_model)),
                              detector="synthetic", max_text_length=32)
    pipe = HatefulMemePipeline(model, processor, detector=SyntheticShapeDetector(), device="cpu")
    line = app_module.decision_line(pipe)
    assert "the most probable class" in line and "threshold 0.5" not in line and "not calibrated" in line
    assert pipe(str(example_paths()[0]), texts="a caption")["threshold_rule"] == "argmax"


def test_the_space_installs_without_hm_hf_on_pypi(tmp_path):
    """hm_hf is not on PyPI: the staged Space carries the package and installs its requirements instead of
    `hm_hf[...]==version`, which no index has."""
    from packaging.requirements import Requirement

    from hm_hf.space import stage_space

    stage_space(SPACE, "org/model", tmp_path)
    requirements = [Requirement(line) for line in (tmp_path / "requirements.txt").read_text().split("\n") if line]
    names = {r.name.lower().replace("_", "-") for r in requirements}
    assert "hm-hf" not in names and {"torch", "transformers", "gradio", "torchvision", "rapidocr"} <= names
    assert "gradio==6.31.0" in map(str, requirements) and all(r.marker is None for r in requirements)
    assert (tmp_path / "hm_hf" / "__init__.py").is_file() and not list(tmp_path.rglob("__pycache__"))


def test_the_space_requirements_need_hm_hf_installed(monkeypatch):
    """Its requirements are read from its installed metadata; run from a bare checkout, the push says so."""
    import importlib.metadata

    from hm_hf.space import SpaceError, space_requirements

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "requires", not_installed)
    with pytest.raises(SpaceError, match="hm_hf is not installed .*nothing was uploaded"):
        space_requirements("hm_hf[demo]==0.1.0\n")
