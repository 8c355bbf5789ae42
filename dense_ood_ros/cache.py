"""Build artifacts (ONNX exports, TensorRT engines) cached beside a JSON record of their key.

An artifact ``X`` is valid only when ``X.json`` exists, records exactly the key the caller
needs (every field the artifact depends on: checksums, sizes, versions, GPU, precision...)
and the SHA-256 of ``X`` itself. Anything else (missing, unreadable, mismatched or corrupt)
is a reason to rebuild, never a reason to crash or to use a stale file. Writes are atomic
(:func:`dense_ood_ros.io.atomic_write`: temporary file, then rename) and the record is
written last, so an interrupted build leaves an artifact without a record, which is rebuilt;
a build that fails (a full disk, a read-only cache folder) leaves neither, and its OSError
names the file.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

from dense_ood_ros.io import atomic_write, file_sha256

logger = logging.getLogger(__name__)

#: Receives one-line progress messages ("building TensorRT engine ..."); when given, it
#: replaces the module loggers for those messages (so a node can forward them to its log
#: and diagnostics without duplicates).
StatusCallback = Callable[[str], None]


def default_cache_dir() -> Path:
    """Return ``$DENSE_OOD_CACHE``, else ``$XDG_CACHE_HOME/dense_ood_ros``.

    Without ``$XDG_CACHE_HOME``, that is ``~/.cache/dense_ood_ros``.
    """
    if os.environ.get("DENSE_OOD_CACHE"):
        return Path(os.environ["DENSE_OOD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dense_ood_ros"


def record_path(artifact: Union[str, Path]) -> Path:
    """Return the path of the JSON record beside an artifact.

    ``model.engine`` -> ``model.engine.json``.
    """
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def _canonical(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and int/float keys) compare as stored."""
    return json.loads(json.dumps(value, sort_keys=True))


def read_record(artifact: Union[str, Path]) -> Dict[str, Any]:
    """Read the record of an artifact; ValueError naming the file when missing or unreadable."""
    path = record_path(artifact)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict):
        raise ValueError(f"{path} has no 'key' object")
    return record


def key_mismatch(recorded: Mapping[str, Any], needed: Mapping[str, Any]) -> Optional[str]:
    """Describe the fields of ``needed`` that ``recorded`` lacks or differs in (None if same)."""
    recorded, needed = _canonical(dict(recorded)), _canonical(dict(needed))
    diffs = [f"{name}: cached {recorded.get(name)!r}, needed {value!r}"
             for name, value in needed.items() if recorded.get(name) != value]
    return "; ".join(diffs) or None


def stale_reason(artifact: Union[str, Path], key: Mapping[str, Any]) -> Optional[str]:
    """Why ``artifact`` cannot be used for ``key``; None when it can."""
    artifact = Path(artifact)
    if not artifact.is_file():
        return f"{artifact} does not exist"
    try:
        record = read_record(artifact)
    except ValueError as exc:
        return str(exc)
    mismatch = key_mismatch(record["key"], key)
    if mismatch:
        return f"cache key differs ({mismatch})"
    try:
        sha256 = file_sha256(artifact)
    except OSError as exc:
        return f"{artifact} is unreadable: {exc}"
    if sha256 != record.get("sha256"):
        return f"{artifact} is corrupt (its checksum differs from {record_path(artifact).name})"
    return None


def store(artifact: Union[str, Path], write: Callable[[Path], None], key: Mapping[str, Any],
          extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write an artifact with ``write(tmp_path)``, then its record (key, checksum, ``extra``)."""
    artifact = Path(artifact)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    record_path(artifact).unlink(missing_ok=True)
    with atomic_write(artifact) as tmp:
        write(tmp)
    record = {"key": _canonical(dict(key)), "sha256": file_sha256(artifact),
              **_canonical(dict(extra or {}))}
    with atomic_write(record_path(artifact)) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    return artifact


def ensure(artifact: Union[str, Path], key: Mapping[str, Any], write: Callable[[Path], None],
           what: str, status: Optional[StatusCallback] = None,
           extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Return ``artifact`` when valid for ``key``.

    Otherwise log why, rebuild it with ``write`` and store it.
    """
    reason = stale_reason(artifact, key)
    if reason is None:
        logger.info("using cached %s %s", what, artifact)
        return Path(artifact)
    (status or logger.info)(f"building {what} {artifact}: {reason}")
    return store(artifact, write, key, extra)
