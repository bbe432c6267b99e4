"""Official checkpoints from the Hugging Face Hub: the known ones, ``hf:`` specs, `models` verb.

A checkpoint anywhere a path is accepted (node parameter ``checkpoint``, ``--checkpoint``) may be
``hf:<owner>/<name>[/<file>]`` (file: ``model.pt``, the official layout, when left out). It is
read from the standard Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``) and downloaded into it when
missing; offline (``HF_HUB_OFFLINE=1`` or no connection) a missing file is one clear error
naming the command that fetches it.

  depth-perception models                   the known checkpoints, and which are cached here
  depth-perception models fetch NAME|SPEC   download one into the Hub cache
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

PREFIX = "hf:"
DEFAULT_FILE = "model.pt"  # what the official MDMModel.from_pretrained downloads


@dataclass(frozen=True)
class HubCheckpoint:
    """One file of a Hub model repository."""

    repo_id: str  # owner/name
    filename: str = DEFAULT_FILE

    @property
    def spec(self) -> str:
        return f"{PREFIX}{self.repo_id}/{self.filename}"


@dataclass(frozen=True)
class OfficialCheckpoint:
    name: str  # short name for `depth-perception models fetch NAME`
    checkpoint: HubCheckpoint
    method: str  # the engine that loads it
    description: str


# The official releases (github.com/Robbyant/lingbot-depth, huggingface.co/robbyant, and
# MetricAnything's student); the other methods add theirs here.
OFFICIAL: tuple[OfficialCheckpoint, ...] = (
    OfficialCheckpoint(
        "lingbot-depth-pretrain",
        HubCheckpoint("robbyant/lingbot-depth-pretrain-vitl-14"),
        "lingbot",
        "LingBot-Depth ViT-L/14, general-purpose depth refinement",
    ),
    OfficialCheckpoint(
        "lingbot-depth-dc",
        HubCheckpoint("robbyant/lingbot-depth-postrain-dc-vitl14"),
        "lingbot",
        "LingBot-Depth-DC ViT-L/14, post-trained for sparse depth completion",
    ),
    OfficialCheckpoint(
        "lingbot-depth-v0.5",
        HubCheckpoint("robbyant/lingbot-depth-pretrain-vitl-14-v0.5"),
        "lingbot",
        "LingBot-Depth ViT-L/14 pretrain, v0.5 release",
    ),
    # github.com/metric-anything/metric-anything: the prompt-free student (DINOv3 ViT-H+/16,
    # 877 M parameters), a plain state dict; monocular_depth_node's checkpoint, or a teacher's
    # prior as ma_student:hf:<repo>/<file>.
    OfficialCheckpoint(
        "metricanything-student",
        HubCheckpoint("yjh001/metricanything_student_depthmap", "student_depthmap.pt"),
        "ma_student",
        "MetricAnything student, DINOv3 ViT-H+/16, metric depth from colour alone",
    ),
)
BY_NAME = {official.name: official for official in OFFICIAL}


def parse_spec(spec: str) -> HubCheckpoint:
    """``hf:<owner>/<name>[/<file>]`` -> repo id and file (the file may be in a subfolder)."""
    parts = spec.removeprefix(PREFIX).strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"{spec!r}: expected {PREFIX}<owner>/<name>[/<file>]")
    return HubCheckpoint("/".join(parts[:2]), "/".join(parts[2:]) or DEFAULT_FILE)


def cached_path(checkpoint: HubCheckpoint) -> Path | None:
    """The file in the local Hub cache, or None (never touches the network)."""
    found = try_to_load_from_cache(checkpoint.repo_id, checkpoint.filename)
    return Path(found) if isinstance(found, str) else None


def download(checkpoint: HubCheckpoint) -> Path:
    """The file's local path, downloaded into the Hub cache if needed. FileNotFoundError in one
    line when it cannot be had (offline and not cached, unknown repo or file): like a missing
    local checkpoint, so the CLI and the nodes report it as one."""
    try:
        return Path(hf_hub_download(checkpoint.repo_id, checkpoint.filename))
    except LocalEntryNotFoundError:  # not cached, and offline by setting or by circumstance
        why = "HF_HUB_OFFLINE is set" if is_offline_mode() else "the Hub cannot be reached"
        raise FileNotFoundError(
            f"{checkpoint.spec}: {checkpoint.filename} of {checkpoint.repo_id} is not in the local "
            f"Hub cache ({constants.HF_HUB_CACHE}) and the machine is offline ({why}); fetch it "
            f"on a connected machine: depth-perception models fetch {checkpoint.spec}"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{checkpoint.spec}: no Hub repository {checkpoint.repo_id}"
        ) from None
    except EntryNotFoundError:
        raise FileNotFoundError(
            f"{checkpoint.spec}: no file {checkpoint.filename} in {checkpoint.repo_id}"
        ) from None


def resolve_checkpoint(spec: str | Path) -> str | Path:
    """``hf:`` specs -> a local path in the Hub cache; any other checkpoint passes through.

    A cached file is used as it is, without asking the Hub for a newer revision: a robot starts
    the same way with or without a network (`depth-perception models fetch` updates)."""
    if not (isinstance(spec, str) and spec.startswith(PREFIX)):
        return spec
    checkpoint = parse_spec(spec)
    return str(cached_path(checkpoint) or download(checkpoint))


# ---------------------------------------------------------------------------------------------
# The `depth-perception models` verb
# ---------------------------------------------------------------------------------------------


def _checkpoint_of(name_or_spec: str) -> HubCheckpoint:
    if name_or_spec in BY_NAME:
        return BY_NAME[name_or_spec].checkpoint
    if name_or_spec.startswith(PREFIX):
        return parse_spec(name_or_spec)
    raise ValueError(
        f"{name_or_spec!r}: neither a known checkpoint ({', '.join(BY_NAME)}) "
        f"nor {PREFIX}<owner>/<name>[/<file>]"
    )


def list_models() -> None:
    print(f"Official checkpoints (Hub cache: {constants.HF_HUB_CACHE})")
    for official in OFFICIAL:
        path = cached_path(official.checkpoint)
        print(f"  {official.name:24s} {official.method:10s} {official.checkpoint.spec}")
        print(f"  {'':24s} {official.description}; {path or 'not cached'}")
    print(
        "Fetch one with `depth-perception models fetch NAME`; use it as"
        " checkpoint:=hf:<repo>/<file> (node parameter) or --checkpoint hf:<repo>/<file>."
    )


def cmd_models(args: argparse.Namespace) -> None:
    try:
        if args.action == "list":
            list_models()
        elif args.checkpoint is None:
            raise ValueError(f"fetch needs a known name ({', '.join(BY_NAME)}) or an hf: spec")
        else:
            print(download(_checkpoint_of(args.checkpoint)))
    except (ValueError, OSError) as error:  # a user error: one line, no traceback
        print(f"depth-perception: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def add_models_verb(sub: argparse._SubParsersAction) -> None:
    """Register `models [fetch NAME|SPEC]` on the CLI's subparsers."""
    p = sub.add_parser("models", help="official checkpoints on the Hugging Face Hub; fetch one")
    p.add_argument("action", nargs="?", choices=("list", "fetch"), default="list")
    p.add_argument(
        "checkpoint", nargs="?", help="fetch: a known name or hf:<owner>/<name>[/<file>]"
    )
    p.set_defaults(func=cmd_models)
