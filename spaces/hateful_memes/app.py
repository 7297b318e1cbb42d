"""Hateful-meme detector: a Gradio demo of hm_hf models (a Hugging Face Space, or run locally).

    python spaces/hateful_memes/app.py                      # the README's main job's model, on 127.0.0.1:7860
    python spaces/hateful_memes/app.py --model org/model    # any model saved by recipes/train_peft.py
    HM_HF_MODEL=org/model HM_HF_DETECTOR=path/to/frcnn python spaces/hateful_memes/app.py

Upload an image; the text on it is read with OCR (PP-OCR, the model's processor's engine; the page names it)
into the text box, where it can be corrected (a model trained on a text pair, MMHS150K's tweet text + image
text, also gets a box for the post's text, the tweet); "Classify" gives the probability that the meme is
hateful (calibrated when the model's decision policy fitted a temperature), the label at the model's threshold with
the rule that chose it and, for region models, the regions the model looked at. Uploads are checked (file
size, pixel count before decoding, real image) and every failure is
a short message in the page, never a stack trace. The server binds 127.0.0.1 unless GRADIO_SERVER_NAME /
--host says otherwise, serves no file but its examples, and queues requests (bounded queue, limited
concurrency); it is never shared through a public tunnel.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no usage reporting

import argparse
import logging
import re
import sys
import threading
from pathlib import Path

import gradio as gr
from PIL import Image

from hm_hf.data.layouts import has_surrogates
from hm_hf.ocr import OcrUnavailableError
from hm_hf.images import BadImageError, load_image
from hm_hf.pipeline import HatefulMemePipeline

logger = logging.getLogger("hateful_memes_app")

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
DEFAULT_MODEL = "outputs/synthetic-tiny"  # what the README's main job trains
MAX_FILE_SIZE = 8 * 1024 * 1024  # bytes per upload (also enforced by gradio at upload time)
MAX_PIXELS = 25_000_000  # checked from the image header, before decoding
QUEUE_SIZE = 16
CONCURRENCY = 2

CONTENT_WARNING = """\
> **Content warning.** This demo classifies memes that may be hateful. Examples shipped with it are
> synthetic (coloured shapes and made-up words), but images you upload, and the model's mistakes, can be
> offensive. The output is a research model's guess, not a judgement about a person or a group.
"""

HOW_IT_WORKS = """\
### How it works
1. **Text.** The text written on the meme is read with OCR (the engine named above) into the text box; correct it if
   it is wrong: the model reads exactly what is in the box.
2. **Image.** Region models look at objects found by a detector (bottom-up-attention Faster R-CNN, or for
   the synthetic demo model, the synthetic world's shape finder); they are drawn on the image. Other models
   read the pixels or only the text.
3. **Both together.** A meme can be hateful only through the combination (harmless text + harmless image),
   so the model (hm_hf Concat / VisualBERT / ViLBERT / UNITER, fine-tuned in full or
   with PEFT adapters) fuses the two and outputs the probability that the meme is hateful.
4. **The decision.** The probability is calibrated by temperature scaling fitted on the model's evaluation
   split (where "0.8" meant about 8 hateful memes in 10); the meme is flagged when it reaches the threshold,
   which training chose by a named rule (e.g. the best F1, or at most 1% of benign memes flagged) on that
   split. Both are saved with the model (`decision_policy.json`) and shown with each answer.

Uploads: at most {max_mb} MB and {max_mp} megapixels. Nothing you upload is stored beyond the request.
"""


def _readme_model() -> str | None:
    """The first `models:` entry of this Space's README (set by `hm-hf push-space --model`)."""
    readme = HERE / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    header = text.split("---")[1] if text.startswith("---") else ""
    match = re.search(r"^models:\s*\n\s*-\s*(\S+)", header, flags=re.M)
    return match.group(1) if match else None


def default_model() -> str:
    """HM_HF_MODEL; on a Space, the README's model; else the README main job's output folder."""
    if os.environ.get("HM_HF_MODEL"):
        return os.environ["HM_HF_MODEL"]
    if os.environ.get("SPACE_ID") and _readme_model():
        return _readme_model()
    for base in (Path.cwd(), HERE.parents[1]):
        if (base / DEFAULT_MODEL).is_dir():
            return str(base / DEFAULT_MODEL)
    return DEFAULT_MODEL


def load_pipeline(model: str, detector: str | None = None, device: str | None = None,
                  revision: str | None = None) -> HatefulMemePipeline:
    """The model's pipeline (a Hub repo at `revision`: a Space pinned to a model version does not change when
    the repo does); the README's synthetic model gets the synthetic world's detector by default."""
    from hm_hf.processing import PROCESSOR_CONFIG_NAME
    from hm_hf.processing.legacy import PIPELINE_CONFIG_NAME

    folder = Path(model)
    saved = any((folder / name).is_file() for name in (PROCESSOR_CONFIG_NAME, PIPELINE_CONFIG_NAME))
    if detector is None and folder.is_dir() and not saved:
        if folder.resolve().as_posix().endswith(DEFAULT_MODEL):
            detector = "synthetic"  # trained on the synthetic data set's features (see hm_hf.synthetic.detector)
    return HatefulMemePipeline.from_pretrained(model, detector=detector, device=device, max_pixels=MAX_PIXELS,
                                               revision=revision)


SYNTHETIC_NOTICE = (
    "**Trained on synthetic data** (coloured shapes and made-up words, hm_hf's test data set): its output on "
    "real memes means nothing."
)


def model_line(pipeline: HatefulMemePipeline, model_name: str) -> str:
    """The line that names the model, with the notice when it was trained on synthetic data (as its folder's
    processor settings record)."""
    line = f"Model: `{model_name}`" if model_name else ""
    if pipeline.settings.trained_on_synthetic_data:
        line = f"{line} — {SYNTHETIC_NOTICE}" if line else SYNTHETIC_NOTICE
    return line


def ocr_line(pipeline: HatefulMemePipeline) -> str:
    """The line that names the OCR engine the model's processor reads meme text with (empty for models that
    read no text)."""
    if not pipeline.reads_text:
        return ""
    try:
        info = pipeline.processor.ocr_engine_info()
    except (OcrUnavailableError, ValueError) as err:
        return f"OCR: `{pipeline.processor.ocr_engine}` is not available here ({err}); type the meme's text."
    return f"OCR: `{info['engine']}` ({info['version']}), language `{info['lang']}`"


def decision_line(pipeline: HatefulMemePipeline) -> str:
    """How the model decides: the threshold and the rule that chose it, and whether its probability is
    calibrated (the model's decision policy, decision_policy.json)."""
    processor = pipeline.processor
    if processor.multi_label:
        if processor.threshold is None:
            each = ", ".join(f"{name} {t:g}" for name, t in zip(processor.label_names, processor.thresholds_per_label))
            return f"Decision: each label whose score is above its threshold ({each})."
        rule = " (the fine-grained shared task's rule)" if processor.threshold == 0.5 else " (set by hand)"
        return f"Decision: each label whose score is above {processor.threshold:g}{rule}."
    policy = processor.decision_policy
    if policy is None and getattr(pipeline.config, "num_labels", 2) <= 2:
        return ("Decision: threshold 0.5 on the model's own probability (no decision policy was saved with the "
                "model: not calibrated).")
    if policy is None:  # more classes: the pipeline decides by arg-max (the neutral policy)
        return ("Decision: the most probable class of the model's own probabilities (no decision policy was saved "
                "with the model: not calibrated).")
    fitted = f" on {policy.fitted_on}" if policy.fitted_on else ""
    if policy.threshold is None:
        decided = "the most probable class"
    elif policy.rule.startswith("fixed@"):
        decided = f"threshold {policy.threshold:.3g} (set by hand, `{policy.rule}`)"
    else:
        decided = f"threshold {policy.threshold:.3g}, chosen by the rule `{policy.rule}`{fitted}"
    if policy.calibrated:
        probability = f"calibrated probability (temperature scaling, T = {policy.temperature:.3g}, fitted{fitted})"
    else:
        probability = "the model's own probability (not calibrated)"
    return f"Decision: {decided}; {probability}."


def retrieval_lines(result: dict, shown: int = 5) -> str:
    """An RGCL result's decision rule, the head's and the kNN vote's probabilities, and its nearest memes."""
    lines = [f"Decision rule: `{result['decision_rule']}` (head {result['head_probability']:.3f}"
             + (f", kNN vote {result['knn_probability']:.3f})" if "knn_probability" in result else ")")]
    for n in result.get("neighbours", [])[:shown]:
        lines.append(f"- meme {n['id']}: {'hateful' if n['label'] == 1 else 'benign'}, similarity {n['similarity']:.3f}")
    return "\n".join(lines)


def _fail(message: str, title: str) -> gr.Error:
    """A message for the page (gradio shows it in a toast); the input's fault, so no server traceback."""
    return gr.Error(message, title=title, print_exception=False)


def _typed_text(value, box: str) -> str:
    """A text box's value, stripped; what no browser sends (a number, broken Unicode from an API client) is the
    input's fault, so a message for the page instead of a model error and a server traceback."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(f"The {box} must be text, not {type(value).__name__}.", title="Bad text")
    if has_surrogates(value):
        raise _fail(f"The {box} is not valid Unicode text; send it as UTF-8.", title="Bad text")
    return value.strip()


class MemeApp:
    """The demo's event handlers around one pipeline (kept separate from the layout for tests)."""

    def __init__(self, pipeline: HatefulMemePipeline):
        self.pipe = pipeline
        self._lock = threading.Lock()  # one model call at a time (tokenizers are not thread-safe)

    # -------------------------------------------------------------- inputs

    @staticmethod
    def _read_upload(upload) -> Image.Image:
        """The uploaded image, checked; any problem becomes a gr.Error with a plain message."""
        if upload is None:
            raise _fail("Upload an image first (PNG, JPEG or WebP).", title="No image")
        path = upload.get("path") if isinstance(upload, dict) else upload
        if not path or not Path(path).is_file():
            raise _fail("The upload did not arrive; please upload the image again.", title="No image")
        size = Path(path).stat().st_size
        if size > MAX_FILE_SIZE:
            raise _fail(
                f"The file is {size / 1e6:.1f} MB; the limit is {MAX_FILE_SIZE / 1e6:.0f} MB.", title="File too large"
            )
        if size == 0:
            raise _fail("The file is empty: upload an image (PNG, JPEG or WebP).", title="Not an image")
        try:
            return load_image(Path(path).read_bytes(), max_pixels=MAX_PIXELS, max_bytes=MAX_FILE_SIZE)
        except BadImageError as err:
            message = str(err).replace("the image", "The file", 1)
            raise _fail(message, title="Unusable image") from None

    # -------------------------------------------------------------- events

    def read_text(self, upload) -> str:
        """Pre-fill the text box with the OCR'd text (empty when the image is cleared)."""
        if upload is None:
            return ""
        image = self._read_upload(upload)
        if not self.pipe.reads_text:
            return ""
        try:
            return self.pipe.processor.read_text(image)
        except OcrUnavailableError:
            gr.Warning("OCR is not available here: type the meme's text in the box.")
            return ""
        except RuntimeError as err:
            gr.Warning(f"OCR failed ({err}): type the meme's text in the box.")
            return ""

    @property
    def reads_pair(self) -> bool:
        """The model was trained on a text pair (MMHS150K: the post's text + the image's own text, by OCR)."""
        return self.pipe.reads_text and self.pipe.processor.text_pair_column is not None

    def classify(self, upload, text, pair=None):
        """(the model's decision at its threshold, the label confidences, annotated image, details markdown)
        for one meme. The decision is its own output: a `gr.Label` of confidences would head them with the most
        probable class, which is not what a model with a threshold other than 0.5 decides."""
        image = self._read_upload(upload)
        text, pair = _typed_text(text, "text"), _typed_text(pair, "second text") if self.reads_pair else ""
        if self.pipe.reads_text and not (pair if self.reads_pair else text):  # the text on the image: OCR it
            try:
                ocr = self.pipe.processor.read_text(image)
            except (OcrUnavailableError, RuntimeError):
                ocr = ""
            if self.reads_pair:
                pair = ocr
            else:
                text = ocr
            if not (text or pair):
                raise _fail(
                    "There is no text: type the meme's text in the box (none could be read from the image).",
                    title="Text needed",
                )
        try:
            with self._lock:
                result = self.pipe(image, texts=text or None,  # (the pair: OCR'd above, "" if nothing was read)
                                   text_pairs=pair if self.reads_pair else None,
                                   return_neighbours=self.pipe.retrieves)
        except Exception:  # noqa: BLE001 - logged for the operator; the user gets a plain message
            logger.exception("classification failed")
            raise _fail("The model failed on this input; please try another image.", title="Model error") from None
        annotations = [
            ((*(int(round(v)) for v in region["box"]),), f"{region['name']}")
            for region in result.get("regions", [])
            if region["name"] != "whole image"
        ]
        annotated = gr.update(value=(image, annotations), visible=self.pipe.uses_regions)
        if self.pipe.processor.multi_label:  # a fine-grained model: protected categories or attack types
            decision = ", ".join(result["labels"]) or "none"  # each label at its threshold
            confidences = result["scores"]
            details = f"**Predicted labels: {decision}**"
        else:
            probability = result["probability"]
            names = self.pipe.settings.label_names
            decision = result["label_name"]  # at the model's threshold, which need not be 0.5
            if len(result["scores"]) > 2 and len(names) == len(result["scores"]):  # MMHS150K's classes, by name
                confidences = dict(zip(names, result["scores"]))
            else:
                confidences = {names[1]: probability, names[0]: 1.0 - probability}
            details = f"**Hateful probability: {probability:.3f}** ({result['label_name']})"
        details += f"\n\n{decision_line(self.pipe)}"
        if "decision_rule" in result:  # a retrieval model: which rule scored it, and its nearest labelled memes
            details += f"\n\n{retrieval_lines(result)}"
        if self.pipe.settings.trained_on_synthetic_data:
            details += f"\n\n{SYNTHETIC_NOTICE}"
        if self.reads_pair:
            details += (f"\n\nText read by the model: “{result['text']}”, with the text on the image: "
                        f"“{result['text_pair']}”")
        elif self.pipe.reads_text:
            details += f"\n\nText read by the model: “{result['text']}”"
        if self.pipe.uses_regions:
            details += f"\n\nRegions read by the model: {len(result.get('regions', []))} (the whole image included)"
        return decision, confidences, annotated, details


def build_demo(pipeline: HatefulMemePipeline, model_name: str = "") -> gr.Blocks:
    """The Blocks layout (queue configured; call `launch` with `launch_kwargs()`)."""
    app = MemeApp(pipeline)
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png"))
    with gr.Blocks(title="Hateful meme detector", analytics_enabled=False, delete_cache=(600, 1800)) as demo:
        gr.Markdown("# Hateful meme detector")
        gr.Markdown(CONTENT_WARNING)
        if model_line(pipeline, model_name):
            gr.Markdown(model_line(pipeline, model_name), elem_id="model")
        if ocr_line(pipeline):
            gr.Markdown(ocr_line(pipeline), elem_id="ocr")
        gr.Markdown(decision_line(pipeline), elem_id="decision-policy")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Meme", type="filepath", sources=["upload", "clipboard"], elem_id="meme")
                on_image = "Text on the meme (read by OCR; correct it if needed)"
                text = gr.Textbox(  # a pair model's first text is the post's (MMHS150K: the tweet), not on the image
                    label="Text of the post the meme came with (e.g. the tweet)" if app.reads_pair else on_image,
                    lines=2,
                    max_length=1000,
                    elem_id="meme-text",
                    visible=pipeline.reads_text,
                )
                pair = gr.Textbox(label=on_image, lines=2, max_length=1000, elem_id="meme-text-pair",
                                  visible=app.reads_pair)
                button = gr.Button("Classify", variant="primary", elem_id="classify")
            with gr.Column():
                label = gr.Label(label="Prediction (at the model's threshold)", elem_id="prediction")
                scores = gr.Label(label="Scores" if pipeline.processor.multi_label else "Probabilities",
                                  num_top_classes=len(pipeline.settings.label_names), show_heading=False,
                                  elem_id="scores")
                details = gr.Markdown(elem_id="details")
                regions = gr.AnnotatedImage(label="Detected regions", visible=pipeline.uses_regions,
                                            elem_id="regions")
        if examples:
            gr.Examples(examples=examples, inputs=[image], label="Examples (synthetic memes)")
        gr.Markdown(HOW_IT_WORKS.format(max_mb=MAX_FILE_SIZE // 2**20, max_mp=MAX_PIXELS // 1_000_000))
        image.change(app.read_text, inputs=image, outputs=pair if app.reads_pair else text, preprocess=False,
                     api_name="read_text", concurrency_limit=CONCURRENCY)
        button.click(app.classify, inputs=[image, text, pair], outputs=[label, scores, regions, details],
                     preprocess=False, api_name="classify", concurrency_limit=CONCURRENCY)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def launch_kwargs(host: str | None = None, port: int | None = None) -> dict:
    """The safe launch settings: loopback unless told, upload limit, only the examples served, no share."""
    return dict(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(EXAMPLES_DIR)],
        share=False,
        show_error=False,
        ssr_mode=False,  # no Node server: the page is rendered by the browser
        mcp_server=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hateful-meme detector demo (Gradio).")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: $HM_HF_MODEL, else "
                        f"{DEFAULT_MODEL}, the README's main job's output)")
    parser.add_argument("--detector", default=os.environ.get("HM_HF_DETECTOR"),
                        help="detector folder / Hub id for region models, or 'synthetic' (default: the model's "
                        "processor_config.json)")
    parser.add_argument("--revision", default=os.environ.get("HM_HF_MODEL_REVISION"),
                        help="the model repo's branch, tag or commit (default: $HM_HF_MODEL_REVISION, else main)")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # any other PIL decode in the app's process is bounded too
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = args.model or default_model()
    try:
        if model.endswith(DEFAULT_MODEL) and not Path(model).is_dir():  # never look for it on the Hub
            raise FileNotFoundError(f"{model} does not exist")
        pipeline = load_pipeline(model, detector=args.detector, device=args.device, revision=args.revision)
    except (OSError, ValueError) as err:
        print(f"app: cannot load the model {model!r}: {err}", file=sys.stderr)
        if model.endswith(DEFAULT_MODEL):
            print("app: train it first with the README's main job, or set HM_HF_MODEL / --model", file=sys.stderr)
        return 2
    demo = build_demo(pipeline, model_name=model)
    demo.launch(**launch_kwargs(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
