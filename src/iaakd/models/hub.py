"""Weights from the Hugging Face Hub, through its own cache, as timm loads them (``huggingface_hub``).

``weights: auto`` resolves a backbone's weights: an installed package, then the Hugging Face cache, then a
download from the Hub when it is reachable and not switched off by the Hub's own ``HF_HUB_OFFLINE=1``
(``HF_ENDPOINT`` names a mirror, ``HF_HOME`` / ``HF_HUB_CACHE`` the cache). What was loaded is recorded: the
Hub id, the resolved commit and the file's SHA-256. ``iaakd weights fetch NAME`` downloads ahead, for compute
nodes without the Hub; ``iaakd weights list`` shows the cache.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from iaakd.errors import UserError, first_line

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's, in the order it tries them
PROBE_SECONDS = 5.0  # a Hub that does not answer this fast is taken as unreachable (no minutes of retries)


@dataclass(frozen=True)
class HubFile:
    """A weights file in the Hugging Face cache."""

    hub_id: str
    revision: str | None  # the commit the file was resolved at
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name


def hub_id(full_name: str) -> str | None:
    """The Hub repository timm loads ``full_name``'s weights from (``timm/<name>`` for most), or None."""
    import timm

    config = timm.models.get_pretrained_cfg(full_name, allow_unregistered=True)
    return getattr(config, "hf_hub_id", None) or None


def offline() -> bool:
    """The Hub's own switch: ``HF_HUB_OFFLINE=1``."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def commit_in(path: Path) -> str | None:
    """The commit a cached file was resolved at: ``.../snapshots/<commit>/<file>``."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def cached(repo_id: str) -> HubFile | None:
    """``repo_id``'s weights file as the Hugging Face cache holds it (its main revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in WEIGHT_FILES:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return HubFile(repo_id, commit_in(Path(found)), Path(found))
    return None


def reachable() -> str | None:
    """None when the Hub's endpoint accepts a connection within PROBE_SECONDS, else why not (one line)."""
    url = urlparse(endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_SECONDS):
            return None
    except OSError as error:
        return f"{url.scheme}://{url.netloc} is not reachable ({first_line(error)})"


def fetch_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """One file of a Hub repository into the Hugging Face cache (not downloaded again when it is there), or
    None when the repository has no such file; a missing repository or revision, or a failed download, is
    one line naming it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except EntryNotFoundError:
        return None
    except RepositoryNotFoundError:
        raise UserError(f"{repo_id}: no such repository on {endpoint()}") from None
    except RevisionNotFoundError:
        raise UserError(f"{where}: no such revision on {endpoint()}") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise UserError(
            f"{where}: downloading {filename} from {endpoint()} failed: {first_line(error)}"
        ) from None


def download(repo_id: str) -> HubFile:
    """``repo_id``'s weights file into the Hugging Face cache (nothing is downloaded again when it is
    there); one line naming what failed."""
    if offline():
        raise UserError(
            f"{repo_id}: the Hub is switched off (HF_HUB_OFFLINE=1) and the cache has no weights for it"
        )
    if (problem := reachable()) is not None:
        raise UserError(f"{repo_id}: {problem}")
    for filename in WEIGHT_FILES:
        if (path := fetch_file(repo_id, filename)) is not None:
            return HubFile(repo_id, commit_in(path), path)
    raise UserError(f"{repo_id}: none of {', '.join(WEIGHT_FILES)} on {endpoint()}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_weights() -> list[dict]:
    """Every weights file in the Hugging Face cache: repository, commit, file, size, SHA-256."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(cache.repos, key=lambda repo: repo.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            for file in revision.files:
                if file.file_name in WEIGHT_FILES:
                    rows.append({"hub_id": repo.repo_id, "revision": revision.commit_hash, "file": file.file_name,
                                 "size": file.size_on_disk, "sha256": sha256(file.file_path),
                                 "path": str(file.file_path)})  # fmt: skip
    return rows
