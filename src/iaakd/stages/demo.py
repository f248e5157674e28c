"""Stage `demo`: writes the synthetic demo dataset into data/demo in the AVA layout."""

from __future__ import annotations

import shutil

from iaakd.data.demo import DemoConfig, generate_demo
from iaakd.stages import common


def demo_config(params: dict) -> DemoConfig:
    data = common.section(params, "data")
    return common.build_config(
        DemoConfig, {"seed": data.get("seed", 0), **(data.get("demo") or {})}, "data.demo"
    )


def main(_argv: list[str]) -> None:
    config = demo_config(common.load_params())
    staging = common.DEMO_ROOT.with_name(common.DEMO_ROOT.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    summary = generate_demo(staging, config, progress=common.show_progress())
    shutil.rmtree(common.DEMO_ROOT, ignore_errors=True)
    staging.rename(common.DEMO_ROOT)
    print(
        f"demo: {summary['images']} images, mean score {summary['mean_score_mean']:.2f} "
        f"(sd {summary['mean_score_sd']:.2f}), {100 * summary['share_above_5']:.1f} % above 5"
    )


if __name__ == "__main__":
    common.run(main)
