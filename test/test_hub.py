"""Official checkpoints from the Hugging Face Hub: hf: specs, the offline cache, `models` verb.

The Hub client reads HF_HOME and HF_HUB_OFFLINE when it is imported, so everything that depends
on them runs in a fresh Python process, with the variables set as a user would set them. The
local cache is laid out as huggingface_hub writes it (blobs/, refs/main, snapshots/<commit>/ with
links to the blobs) and read back with huggingface_hub's own try_to_load_from_cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import try_to_load_from_cache

from depth_perception.models.checkpoints import save_official_checkpoint
from depth_perception.models.hub import OFFICIAL, HubCheckpoint, parse_spec, resolve_checkpoint
from depth_perception.models.lingbot import build_preset

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/tiny-lingbot"


def add_to_cache(hub_cache: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Put `source` into a Hub cache as huggingface_hub does after a download of `main`."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    data = source.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    link = repo / "snapshots" / COMMIT / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    """An HF_HOME whose Hub cache holds a tiny official-layout LingBot checkpoint."""
    home = tmp_path_factory.mktemp("hf_home")
    torch.manual_seed(0)
    source = save_official_checkpoint(build_preset("tiny"), home.parent / "source" / "model.pt")
    link = add_to_cache(home / "hub", REPO, "model.pt", source)
    # the official post-trained model's repo too, so `models` has one cached entry to show
    dc = next(o for o in OFFICIAL if o.name == "lingbot-depth-dc").checkpoint
    add_to_cache(home / "hub", dc.repo_id, dc.filename, source)
    assert try_to_load_from_cache(REPO, "model.pt", cache_dir=home / "hub") == str(link)
    return home


def run_offline(hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    """`python *args` with the Hub client offline and its cache under hf_home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_spec_names_repo_and_file():
    assert parse_spec("hf:owner/name") == HubCheckpoint("owner/name", "model.pt")
    assert parse_spec("hf:owner/name/sub/w.pt") == HubCheckpoint("owner/name", "sub/w.pt")
    with pytest.raises(ValueError, match="expected hf:<owner>/<name>"):
        parse_spec("hf:owner")


def test_other_checkpoints_pass_through():
    for spec in ("models/lingbot_depth_small", "tiny", Path("a/model.pt"), ""):
        assert resolve_checkpoint(spec) == spec


def test_known_checkpoints_are_the_official_lingbot_releases():
    repos = {o.checkpoint.repo_id for o in OFFICIAL}
    assert {
        "robbyant/lingbot-depth-pretrain-vitl-14",
        "robbyant/lingbot-depth-postrain-dc-vitl14",
        "robbyant/lingbot-depth-pretrain-vitl-14-v0.5",
    } <= repos
    lingbot = [o for o in OFFICIAL if o.method == "lingbot"]
    assert all(o.checkpoint.filename == "model.pt" and o.description for o in lingbot)


LOAD = """
import sys, torch
from depth_perception.models.checkpoints import load_model, load_official_checkpoint
from depth_perception.models.hub import resolve_checkpoint
spec, source = sys.argv[1], sys.argv[2]
print(resolve_checkpoint(spec))
a, b = load_model(spec).state_dict(), load_official_checkpoint(source).state_dict()
assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
"""


def test_hf_spec_loads_from_the_offline_cache(hf_home):
    source = hf_home.parent / "source" / "model.pt"
    result = run_offline(hf_home, "-c", LOAD, f"hf:{REPO}/model.pt", str(source))
    assert result.returncode == 0, result.stderr
    resolved = Path(result.stdout.strip())
    assert resolved.is_relative_to(hf_home / "hub") and resolved.resolve().is_file()


NOT_CACHED = """
from depth_perception.models.checkpoints import load_model
try:
    load_model("hf:someone/not-downloaded/model.pt")
except FileNotFoundError as error:  # like a missing local checkpoint
    print(error)
"""


def test_not_cached_offline_is_one_clear_line(hf_home):
    result = run_offline(hf_home, "-c", NOT_CACHED)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    assert "someone/not-downloaded" in line
    assert "not in the local Hub cache" in line and "offline" in line
    assert "depth-perception models fetch hf:someone/not-downloaded/model.pt" in line


def test_models_lists_the_known_checkpoints_and_what_is_cached(hf_home):
    result = run_offline(hf_home, "-m", "depth_perception.cli", "models")
    assert result.returncode == 0, result.stderr
    for official in OFFICIAL:
        assert official.name in result.stdout and official.checkpoint.spec in result.stdout
    dc_line = next(line for line in result.stdout.splitlines() if "post-trained" in line)
    assert str(hf_home / "hub") in dc_line  # cached here
    assert result.stdout.count("not cached") == len(OFFICIAL) - 1


def test_models_fetch_offline_exits_2_with_one_line(hf_home):
    result = run_offline(
        hf_home, "-m", "depth_perception.cli", "models", "fetch", "lingbot-depth-v0.5"
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "robbyant/lingbot-depth-pretrain-vitl-14-v0.5" in line and "offline" in line
    # a cached one is "fetched" from the cache alone
    result = run_offline(
        hf_home, "-m", "depth_perception.cli", "models", "fetch", "lingbot-depth-dc"
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(hf_home / "hub")
