"""Pushing a trained model folder (weights or adapters, card, figures, results) to the Hub.

Only the main process pushes. The token comes from the argument, `HF_TOKEN` or the cached login and is
never printed or logged. Offline (`HF_HUB_OFFLINE=1`) or without network the push fails with one clear
error after everything has been saved locally, so no training is lost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class PushError(RuntimeError):
    """The push failed; the local folder is complete and can be pushed again later."""


def push_folder(folder, repo_id: str, *, private: bool = True, token: str | None = None,
                repo_type: str = "model", commit_message: str = "Upload with hm_hf") -> str:
    """Create `repo_id` (private by default) and upload `folder` to it; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    folder = Path(folder)
    retry = (f"the files are saved in {folder}; push them later with `huggingface-cli upload {repo_id} {folder}`"
             f" (or `hm-hf push` once online)")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise PushError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; {retry}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), commit_message=commit_message,
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.tmp"],
        )
    except OfflineModeIsEnabled as err:
        raise PushError(f"cannot push to {repo_id}: offline mode is enabled; {retry}") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise PushError(f"cannot push to {repo_id} (HTTP {status}); {retry}") from None
    except OSError as err:  # no network: connection errors are OSErrors
        raise PushError(f"cannot push to {repo_id}: {type(err).__name__} (no network?); {retry}") from None
    logger.info("pushed %s to %s", folder, repo_id)
    return str(getattr(info, "commit_url", info))
