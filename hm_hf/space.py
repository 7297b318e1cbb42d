"""`hm-hf push-space`: upload the Gradio demo in `spaces/hateful_memes/` as a Hugging Face Space.

    hm-hf push-space --repo my-org/hateful-memes-demo --model my-org/hateful-memes-visualbert [--public]

The Space is private unless `--public` is given. The model must be on the Hub (a Space cannot see a local
folder): it is written into the Space README's `models:` list (which links the two on the Hub and is where
the app reads it from) and set as the Space variable `HM_HF_MODEL` when the Space is created. It is looked up
before anything is uploaded: a model that does not exist (or that the token cannot see) is an error, and a
private or gated one a warning, since the Space loads it only with a secret `HF_TOKEN` that can read it
(huggingface_hub reads that variable in the app; the secret is not set for you, so that your own token does
not end up in the Space). The token comes from `$HF_TOKEN` or the stored `hf auth login`, never from the
command line (shell history, process lists), and is never printed: errors are shown with it masked.

The demo's example memes come from the synthetic world (`hm_hf.synthetic.examples.make_examples`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["SPACE_FILES", "render_readme", "stage_space", "check_model", "push_space", "cli"]

_CHECKOUT_SPACE = Path(__file__).resolve().parents[1] / "spaces" / "hateful_memes"  # beside the hm_hf package
#: the Space folder of this hm_hf checkout (from any working directory), else ./spaces/hateful_memes
SPACE_DIR = _CHECKOUT_SPACE if _CHECKOUT_SPACE.is_dir() else Path("spaces/hateful_memes")
SPACE_FILES = ("README.md", "app.py", "requirements.txt", "packages.txt")
EXAMPLE_PATTERN = "examples/*.png"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class SpaceError(ValueError):
    """A bad argument or Space folder; the message says what to do."""


def render_readme(text: str, model: str) -> str:
    """The Space README with `models:` set to [model] (the YAML header must already have a models list)."""
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        raise SpaceError("the Space README.md must start with a YAML header between '---' lines")
    end = text.index("\n---", 4)
    header, rest = text[4:end], text[end:]
    new_header, count = re.subn(r"^models:\s*\n(?:\s*-\s*.*\n?)*", f"models:\n- {model}\n", header + "\n", flags=re.M)
    if count != 1:
        raise SpaceError("the Space README.md header has no `models:` list to fill in")
    return "---\n" + new_header.rstrip("\n") + rest


_HM_HF_REQUIREMENT = re.compile(r"^\s*hm[_-]hf\s*(?:\[([^\]]*)\])?\s*(?:==\s*\S+)?\s*$", re.I)


def space_requirements(text: str) -> str:
    """requirements.txt for the Space: hm_hf is not on PyPI, so its line (``hm_hf[extras]==version``) becomes
    hm_hf's own requirements with those extras (the package itself travels in the Space, beside app.py)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        own = requires("hm_hf") or []
    except PackageNotFoundError:
        raise SpaceError("hm_hf is not installed (only importable from its folder), so its requirements cannot be "
                         "read for the Space: install it with the README's command (pip install -e ...), then push "
                         "again (nothing was uploaded)") from None
    lines = []
    for line in text.splitlines():
        match = _HM_HF_REQUIREMENT.match(line)
        if not match:
            lines.append(line)
            continue
        extras = {e.strip() for e in (match.group(1) or "").split(",") if e.strip()}
        for spec in own:
            req = Requirement(spec)
            if req.marker is not None and "extra" in str(req.marker):  # an extra's: kept for the extras named
                if not any(req.marker.evaluate({"extra": extra}) for extra in extras):
                    continue
                req.marker = None
            lines.append(str(req))
    return "\n".join(dict.fromkeys(lines)) + "\n"


def stage_space(space_dir, model: str, out_dir) -> list[str]:
    """Copy the Space's files (README with the model filled in, app, requirements, examples) to out_dir, with
    the hm_hf package itself (not on PyPI: the app imports it from beside app.py)."""
    space_dir, out_dir = Path(space_dir), Path(out_dir)
    missing = [name for name in SPACE_FILES if not (space_dir / name).is_file()]
    if missing:
        raise SpaceError(f"{space_dir} is not the Space folder: {', '.join(missing)} missing (use --space-dir)")
    files = []
    for name in SPACE_FILES:
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        if name == "README.md":
            try:
                readme = (space_dir / name).read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise SpaceError(f"{space_dir / name}: not UTF-8 text (byte {err.start}); save it as UTF-8, then push "
                                 "again (nothing was uploaded)") from None
            (out_dir / name).write_text(render_readme(readme, model), encoding="utf-8")
        elif name == "requirements.txt":
            (out_dir / name).write_text(space_requirements((space_dir / name).read_text(encoding="utf-8")),
                                        encoding="utf-8")
        else:
            shutil.copyfile(space_dir / name, out_dir / name)
        files.append(name)
    for example in sorted(space_dir.glob(EXAMPLE_PATTERN)):
        target = out_dir / example.relative_to(space_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(example, target)
        files.append(example.relative_to(space_dir).as_posix())
    package = Path(__file__).resolve().parent
    shutil.copytree(package, out_dir / "hm_hf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    dirs_exist_ok=True)
    files += sorted(p.relative_to(out_dir).as_posix() for p in (out_dir / "hm_hf").rglob("*") if p.is_file())
    return files


def _mask(message: str, token: str | None) -> str:
    message = str(message)
    if token:
        message = message.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", message)  # any other token-looking string too


class LookupFailed(RuntimeError):
    """The model could not be looked up on the Hub (no network, offline mode, a Hub error); nothing was uploaded."""


def check_model(model: str, repo: str, token: str | None = None) -> str | None:
    """Look `model` up on the Hub (`HfApi.model_info`) before its Space is made: a Space whose model is missing
    fails at start-up. Raises SpaceError when it is not there; returns a warning when the Space needs the
    secret HF_TOKEN to load it (a private or gated model), else None."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = HfApi(token=token).model_info(model)
    except RepositoryNotFoundError:
        raise SpaceError(
            f"--model {model!r} is not a model on the Hub (or it is private and this token, from $HF_TOKEN or "
            "`hf auth login`, cannot read it): push the model first (the recipe's push_to_hub / hub_model_id), "
            "then run push-space again"
        ) from None
    except Exception as err:  # noqa: BLE001 - no network, offline mode, a Hub error: nothing is uploaded yet
        raise LookupFailed(f"{type(err).__name__}: {err}") from err
    settings = f"https://huggingface.co/spaces/{repo}/settings"
    if getattr(info, "private", False):
        return (f"the model {model} is private: the Space can load it only with a secret HF_TOKEN holding a token "
                f"with read access to {model}; add it under 'Variables and secrets' at {settings}")
    if getattr(info, "gated", False):
        return (f"the model {model} is gated: the Space can load it only with a secret HF_TOKEN holding a token of "
                f"an account granted access to {model}; add it under 'Variables and secrets' at {settings}")
    return None


def push_space(repo: str, model: str, space_dir=SPACE_DIR, private: bool = True, token: str | None = None) -> str:
    """Create (or update) the Space `repo` running `model`; returns its URL."""
    from hm_hf.hub import push_folder

    if not _REPO_ID.match(repo):
        raise SpaceError(f"--repo {repo!r} is not a Hub id of the form org/name")
    if Path(model).exists() or not _REPO_ID.match(model):
        raise SpaceError(
            f"--model {model!r} must be a Hub model id (org/name): a Space cannot read a local folder. Push the "
            "model first (the recipe's push_to_hub / hub_model_id) and pass its id"
        )
    with tempfile.TemporaryDirectory() as staging:
        files = stage_space(space_dir, model, staging)
        warning = check_model(model, repo, token)
        if warning:  # still pushed: the secret can be added afterwards
            print(f"push-space: warning: {warning}", file=sys.stderr)
        push_folder(staging, repo, repo_type="space", private=private, token=token, ignore_patterns=[],
                    commit_message=f"hm-hf push-space: demo of {model} ({len(files)} files)",
                    create_repo_kwargs={"space_sdk": "gradio",
                                        "space_variables": [{"key": "HM_HF_MODEL", "value": model}]})
    return f"https://huggingface.co/spaces/{repo}"


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hm-hf push-space", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="the Space's Hub id, org/name")
    parser.add_argument("--model", required=True, help="Hub id of the model the Space runs")
    parser.add_argument("--public", action="store_true", help="make the Space public (default: private)")
    parser.add_argument("--space-dir", default=str(SPACE_DIR), help=f"the Space folder (default {SPACE_DIR})")
    args = parser.parse_args(argv)
    token = os.environ.get("HF_TOKEN") or None
    try:
        url = push_space(args.repo, args.model, space_dir=args.space_dir, private=not args.public, token=token)
    except SpaceError as err:
        print(f"push-space: error: {err}", file=sys.stderr)
        return 2
    except LookupFailed as err:
        print(f"push-space: could not look up the model {args.model} on the Hub, so nothing was uploaded "
              f"({_mask(str(err), token)}); check the network and HF_HUB_OFFLINE, then run it again", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - network / auth failures: a message without the token
        print(f"push-space: upload failed: {_mask(f'{type(err).__name__}: {err}', token)}", file=sys.stderr)
        return 1
    print(f"push-space: {'public' if args.public else 'private'} Space ready at {url} (model {args.model})")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
