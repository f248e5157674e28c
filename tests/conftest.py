"""Shared fixtures. ../shared/ava-sample is read by path: absent, its tests skip, except under CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AVA_SAMPLE = REPO_ROOT.parent / "shared" / "ava-sample"


@pytest.fixture(scope="session")
def ava_sample() -> Path:
    if not AVA_SAMPLE.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{AVA_SAMPLE} is missing, and under CI=true it must be present")
        pytest.skip(f"{AVA_SAMPLE} is absent: tests on the real AVA sample are skipped")
    return AVA_SAMPLE


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 48-image demo dataset in the AVA layout, generated once per session."""
    from iaakd.data.demo import DemoConfig, generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, DemoConfig(num_images=48, seed=3), progress=False)
    return root
