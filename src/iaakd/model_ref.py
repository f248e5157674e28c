"""A trained student named three ways, read without running code in any file:

- ``models/student.pt``: a checkpoint of the student stage (``torch.load(weights_only=True)``);
- ``DIR``: a folder written by ``iaakd export MODEL --hub-folder DIR`` (JSON and safetensors);
- ``hf://ORG/NAME[@REVISION]``: such a folder on the Hugging Face Hub, through the Hub's cache
  (``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` as for every Hub client); the resolved commit and
  each file's SHA-256 are recorded in :attr:`LoadedStudent.hub`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from iaakd.data.images import Preprocess
from iaakd.errors import UserError
from iaakd.hub_folder import CONFIG_FILE, WEIGHTS_FILE, is_model_folder, read_folder
from iaakd.models import Student
from iaakd.models.hub import commit_in, endpoint, fetch_file, offline, reachable, sha256
from iaakd.student import load_student

HUB_PREFIX = "hf://"
HUB_NAME = re.compile(r"^hf://(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


@dataclass(frozen=True)
class LoadedStudent:
    model: Student
    preprocess: Preprocess
    checkpoint: dict  # the checkpoint's fields (a folder's config.json read as one)
    name: str  # as the user gave it
    sha256: str  # of the weights file: the .pt, or the folder's model.safetensors
    hub: dict | None = None  # hf://: repository, revision asked, commit resolved, files' SHA-256


def load_model(name: str | Path) -> LoadedStudent:
    """The student ``name`` points to: a ``.pt`` file, a hub folder, or ``hf://ORG/NAME[@REVISION]``."""
    text = str(name)
    if text.startswith(HUB_PREFIX):
        return _from_hub(text)
    path = Path(name)
    if path.is_dir():
        if not is_model_folder(path):
            raise UserError(f"{path}: a folder without {CONFIG_FILE}; name a .pt file, a folder written by "
                            "iaakd export --hub-folder, or hf://ORG/NAME")  # fmt: skip
        return _from_folder(path, text)
    model, preprocess, checkpoint = load_student(path)
    return LoadedStudent(model, preprocess, checkpoint, text, sha256(path))


def _from_folder(folder: Path, name: str, hub: dict | None = None) -> LoadedStudent:
    model, preprocess, checkpoint = read_folder(folder)  # first: it names a missing or foreign weights file
    weights_sha256 = hub["files"][WEIGHTS_FILE] if hub else sha256(folder / WEIGHTS_FILE)  # hashed once
    return LoadedStudent(model, preprocess, checkpoint, name, weights_sha256, hub)


def _from_hub(name: str) -> LoadedStudent:
    match = HUB_NAME.match(name)
    if match is None:
        raise UserError(f"{name}: not hf://ORG/NAME or hf://ORG/NAME@REVISION")
    repo, revision = match["repo"], match["revision"]
    files = repository_files(repo, (CONFIG_FILE, WEIGHTS_FILE), revision)  # model.onnx is not run here
    folder = files[CONFIG_FILE].parent  # the snapshot folder of the resolved commit
    if any(path.parent != folder for path in files.values()):
        raise UserError(f"{name}: its files resolved to different commits; try again")
    hub = {
        "repo": repo,
        "revision": revision or "main",
        "commit": commit_in(files[CONFIG_FILE]),
        "files": {filename: sha256(path) for filename, path in sorted(files.items())},
    }
    return _from_folder(folder, name, hub)


def repository_files(
    repo_id: str, filenames: tuple[str, ...], revision: str | None = None
) -> dict[str, Path]:
    """Files of one revision of a Hub repository, through the Hugging Face cache: downloaded when the Hub
    is reachable and not switched off, else taken from the cache. A missing file, repository or revision is
    one line naming it."""
    from huggingface_hub import try_to_load_from_cache

    where = f"{repo_id}@{revision}" if revision else repo_id
    problem = "the Hub is switched off (HF_HUB_OFFLINE=1)" if offline() else reachable()
    found: dict[str, Path] = {}
    for filename in filenames:
        if problem is not None:  # the cache alone
            cached_file = try_to_load_from_cache(repo_id, filename, revision=revision)
            if not isinstance(cached_file, str):
                raise UserError(f"{where}: {filename} is not in the Hugging Face cache and {problem}")
            found[filename] = Path(cached_file)
            continue
        if (path := fetch_file(repo_id, filename, revision)) is None:
            raise UserError(f"{where}: has no {filename} on {endpoint()}")
        found[filename] = path
    return found
