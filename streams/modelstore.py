"""Where a worker's encoder comes from: the configured model dir, exported on first use.

Serving never imports torch: only when no exported model exists yet (a fresh machine
running the demo or eval) is the default encoder exported, which needs the ``export``
extra. A worker given a model dir that does not exist fails with a clear error instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from encoders.errors import ModelDirError
from encoders.manifest import MANIFEST_FILE
from streams.settings import Settings

log = logging.getLogger(__name__)

def ensure_model(settings: Settings, progress: Callable[[str], None] | None = None, *,
                 fp16: bool = False) -> Path:
    """The model directory, exporting the configured packaged encoder (``model.name``, with
    int8; fp16 too when asked, for the GPU) into it if empty. An existing export is used as it is."""
    model_dir = settings.model_dir
    if (model_dir / MANIFEST_FILE).exists():
        return model_dir
    try:
        from export.exporter import export_model, packaged_model_path
    except ImportError as exc:
        raise ModelDirError(
            f"no exported model in {model_dir}, and exporting one needs torch: "
            "pip install 'recstream[export]', or point --model-dir at an exported model"
        ) from exc
    name = settings.model.name
    source = packaged_model_path(name)
    log.info("no model in %s yet: exporting the %s encoder (once)", model_dir, name)
    export_model(source, model_dir, int8=True, fp16=fp16, model_name=name,
                 progress=progress or (lambda m: log.info("%s", m)))
    return model_dir
