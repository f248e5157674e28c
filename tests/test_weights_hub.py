"""Weights from the Hub, tested against a stand-in Hub on the loopback (tests/hub_stand_in.py): ``weights:
auto`` downloads once through the Hugging Face cache and records the Hub id, commit and SHA-256; with
``HF_HUB_OFFLINE=1`` the cache serves and no request is sent; offline with an empty cache is one line naming
``iaakd weights fetch``; ``iaakd weights fetch`` and ``list``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from hub_stand_in import COMMIT, REPO, SERVED, HubStandIn, hub_env, timm_safetensors


@pytest.fixture(scope="module")
def served_weights() -> bytes:
    """The served file: the model's own (random, seeded) weights, in safetensors."""
    return timm_safetensors()


@pytest.fixture
def stand_in(served_weights):
    with HubStandIn({(REPO, "model.safetensors"): served_weights}) as hub:
        yield hub


def iaakd(env: dict, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iaakd", *argv], env=env, capture_output=True, text=True)


def test_fetch_downloads_once_into_the_cache_and_list_shows_its_hash(stand_in, served_weights, tmp_path):
    env = hub_env(stand_in, tmp_path / "hf")
    fetched = iaakd(env, "weights", "fetch", SERVED)
    assert fetched.returncode == 0, fetched.stderr
    served_hash = hashlib.sha256(served_weights).hexdigest()
    assert f"{REPO}@{COMMIT[:10]} model.safetensors sha256 {served_hash}" in fetched.stdout
    assert stand_in.downloads() == 1
    again = iaakd(hub_env(stand_in, tmp_path / "hf", offline=True), "weights", "fetch", SERVED)
    assert again.returncode == 0 and stand_in.downloads() == 1  # from the cache
    listed = iaakd(env, "weights", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(row["hub_id"], row["revision"], row["sha256"], row["size"]) for row in rows] == [
        (REPO, COMMIT, served_hash, len(served_weights))
    ]


def test_auto_weights_come_from_the_hub_then_from_the_cache_without_a_request(
    stand_in, served_weights, tmp_path
):
    script = ("from iaakd.models import create_backbone; import json; "
              f"print(json.dumps(create_backbone('{SERVED}', 'auto', num_classes=0)[1].as_dict()))")  # fmt: skip
    first = subprocess.run([sys.executable, "-c", script], env=hub_env(stand_in, tmp_path / "hf"),
                           capture_output=True, text=True)  # fmt: skip
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert info == {"source": "hub", "path": "model.safetensors", "sha256": hashlib.sha256(served_weights).hexdigest(),
                    "hub_id": REPO, "revision": COMMIT}  # fmt: skip
    before = len(stand_in.requests)
    cached = subprocess.run([sys.executable, "-c", script], env=hub_env(stand_in, tmp_path / "hf", offline=True),
                            capture_output=True, text=True)  # fmt: skip
    assert cached.returncode == 0 and json.loads(cached.stdout)["source"] == "hf-cache"
    assert len(stand_in.requests) == before  # HF_HUB_OFFLINE=1 and cached: not one request


def test_offline_with_an_empty_cache_is_one_line_naming_iaakd_weights_fetch(tmp_path):
    script = f"from iaakd.models import create_backbone; create_backbone('{SERVED}', 'auto')"
    result = subprocess.run([sys.executable, "-c", script],
                            env=hub_env(None, tmp_path / "hf", offline=True), capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0
    assert f"found offline, and {REPO}: the Hub is switched off (HF_HUB_OFFLINE=1)" in result.stderr
    assert f"`iaakd weights fetch {SERVED}`" in result.stderr
    fetched = iaakd(hub_env(None, tmp_path / "hf", offline=True), "weights", "fetch", SERVED)
    assert (
        fetched.returncode == 1 and fetched.stderr.count("\n") == 1 and "HF_HUB_OFFLINE=1" in fetched.stderr
    )


def test_an_unreachable_hub_is_one_line_within_seconds_not_minutes_of_retries(tmp_path):
    env = {**hub_env(None, tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    result = iaakd(env, "weights", "fetch", SERVED)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "http://127.0.0.1:9 is not reachable" in result.stderr


def test_a_name_timm_does_not_know_is_refused_before_any_request(stand_in, tmp_path):
    result = iaakd(hub_env(stand_in, tmp_path / "hf"), "weights", "fetch", "resnet_nonexistent")
    assert result.returncode == 1 and "unknown backbone 'resnet_nonexistent'" in result.stderr
    assert stand_in.requests == []
