"""``iaakd weights fetch NAME...`` / ``iaakd weights list``: backbone weights in the Hugging Face cache.

``fetch`` downloads each named backbone's weights from the Hub (or the mirror ``HF_ENDPOINT`` names) into the
cache (``HF_HOME``, ``HF_HUB_CACHE``), for compute nodes that cannot reach the Hub: fetch on a login node, then
run with ``HF_HUB_OFFLINE=1`` where the cache is shared. ``list`` shows what the cache holds, with sizes and
SHA-256 hashes. Names are timm's (``resnet18``, ``resnet18.a1_in1k``).
"""

from __future__ import annotations

import argparse
import json
import sys

from iaakd.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(
        dest="action", required=True, parser_class=type(parser), help="fetch or list"
    )
    fetch = actions.add_parser("fetch", help="download backbones' weights into the Hugging Face cache")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="timm model names")
    listing = actions.add_parser("list", help="the weights in the Hugging Face cache")
    listing.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from iaakd.models import hub
    from iaakd.models.backbones import resolve_name

    if args.action == "list":
        rows = hub.cached_weights()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['hub_id']}@{(row['revision'] or '?')[:10]}  {row['file']}  "
                      f"{row['size'] / 1e6:.1f} MB  sha256 {row['sha256']}")  # fmt: skip
            print(f"iaakd weights: {len(rows)} weights files in the Hugging Face cache", file=sys.stderr)
        return 0
    for name in args.names:
        full_name = resolve_name(name)
        repo_id = hub.hub_id(full_name)
        if repo_id is None:
            raise UserError(f"{full_name}: timm names no Hub repository for its weights")
        found = hub.cached(repo_id) or hub.download(repo_id)
        print(f"{full_name}: {found.hub_id}@{(found.revision or '?')[:10]} {found.filename} "
              f"sha256 {hub.sha256(found.path)} in {found.path.parent}")  # fmt: skip
    return 0
