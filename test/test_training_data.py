"""Training data: bag extraction to shards, augmentation geometry, distributed loading.

Small and CPU-only: two simulated bags (96x72 and 80x60, one MCAP) and a ground-truth-less bag
of two real captures (simulated frames without ground truth when the captures are absent).
Shards are checked against the source frames decoded independently (tarfile + OpenCV), the
LiDAR transform against open3d, augmentation by back-projecting through the intrinsics, and
the loader's partition / resume properties by enumerating what every rank and worker yields.
"""

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import torch

from depth_perception.core.camera import Intrinsics
from depth_perception.io.bag import write_frames_bag, write_sim_bag
from depth_perception.io.calibration import invert_transform
from depth_perception.io.frames import RGBDFrame
from depth_perception.io.image_folder import find_real_captures, read_image_folder
from depth_perception.sim.sensors import LidarConfig
from depth_perception.sim.sequence import (
    CAMERA_LINK_T_OPTICAL,
    SequenceConfig,
    generate_sequence,
)
from training.augment import (
    AugmentConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment,
    crop,
    hflip,
    jpeg_reencode,
    motion_blur,
    motion_blur_kernel,
    random_resized_crop,
    resize,
    shot_noise,
    unified_focal_resize,
)
from training.dataset import Collate, ShardDataset, ShardLoader
from training.extract import (
    ExtractConfig,
    extract,
    find_bags,
    main,
    parse_group,
    select_group,
)
from training.shards import MANIFEST, load_index, read_manifest, scan_index

CFG_A = SequenceConfig(
    seed=3,
    n_frames=5,
    width=96,
    height=72,
    lidar_config=LidarConfig(n_beams=16, horizontal_res_deg=2.0),
)
CFG_B = SequenceConfig(seed=4, n_frames=4, width=80, height=60, lidar=False)
N_SAMPLES = 5 + 4 + 2  # 11: divisible by neither 2 nor 3


def _real_frames() -> list[RGBDFrame]:
    root = find_real_captures()
    if root is not None:
        return read_image_folder(root)[:2]
    # No captures on this machine: ground-truth-less frames from the simulator instead.
    cfg = replace(CFG_B, seed=9, n_frames=2)
    return [
        replace(f.to_rgbd_frame(), gt_depth=None, instance=None, extra={})
        for f in generate_sequence(cfg)
    ]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    write_sim_bag(root / "robot" / "run.1", CFG_A, progress=False)
    write_sim_bag(root / "b", CFG_B, storage="mcap", progress=False)
    real = _real_frames()
    write_frames_bag(root / "real", real)
    sources = {
        "robot__run_1": [f.to_rgbd_frame() for f in generate_sequence(CFG_A)],
        "b": [f.to_rgbd_frame() for f in generate_sequence(CFG_B)],
        "real": real,
    }
    return root, sources


def _cfg(out: Path) -> ExtractConfig:
    return ExtractConfig(out=out, shard_size=2, lidar=True, progress=False)


@pytest.fixture(scope="module")
def shards(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    report = extract([bags[0]], _cfg(out), workers=1)
    assert report.done == ["b", "real", "robot__run_1"] and not report.failed
    assert report.frames == N_SAMPLES
    return out


def _tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """Independent reader: tarfile members grouped by key (name up to the first dot)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def test_find_bags_and_groups(bags, tmp_path):
    found = find_bags([bags[0]])
    assert [b for _, b in found] == ["b", "real", "robot__run_1"]
    assert found[2][0] == bags[0] / "robot" / "run.1"
    # The bag itself as input: its own name; the same bag through two inputs: once.
    run = bags[0] / "robot" / "run.1"
    assert find_bags([run]) == [(run, "run_1")]
    assert find_bags([bags[0] / "robot", run]) == [(run, "run_1")]
    # Two bags with the same relative path under two inputs: told apart by a path hash.
    shutil.copytree(run, tmp_path / "run.1")
    ids = [b for _, b in find_bags([bags[0] / "robot", tmp_path])]
    assert len(set(ids)) == 2 and all(i.startswith("run_1-") for i in ids)
    groups = [select_group(found, parse_group(f"{i}/2")) for i in range(2)]
    assert groups[0] == [found[0], found[2]] and groups[1] == [found[1]]
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(ValueError):
            parse_group(bad)


def test_shards_read_back_equal_to_source(bags, shards):
    _, sources = bags
    root, records = read_manifest(shards)
    assert [(r["bag"], r["n"]) for r in records] == [
        ("b", 2),
        ("b", 2),
        ("real", 2),
        ("robot__run_1", 2),
        ("robot__run_1", 2),
        ("robot__run_1", 1),
    ]
    seen = {bag: 0 for bag in sources}
    for rec in records:
        path = root / rec["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["sha256"]
        assert path.stat().st_size == rec["bytes"]
        # The sidecar index agrees with tarfile's own member offsets.
        assert load_index(path) == scan_index(path)
        samples = _tar_samples(path)
        assert len(samples) == rec["n"]
        stamps = []
        for key, members in samples.items():
            meta = json.loads(members["json"])
            src: RGBDFrame = sources[rec["bag"]][meta["index"]]
            assert key == meta["key"] == f"{rec['bag']}_{meta['index']:07d}"
            assert meta["stamp_ns"] == src.stamp_ns
            stamps.append(meta["stamp_ns"])
            # rgb exact
            bgr = cv2.imdecode(np.frombuffer(members["rgb.png"], np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(bgr[..., ::-1], src.rgb)
            # depth: 16-bit millimetres, 0 = hole, within half a millimetre
            mm = cv2.imdecode(np.frombuffer(members["depth.png"], np.uint8), -1)
            assert mm.dtype == np.uint16
            valid = np.isfinite(src.depth)
            np.testing.assert_array_equal(mm > 0, valid)
            assert np.abs(mm[valid] / 1000.0 - src.depth[valid]).max() <= 0.0005 + 1e-6
            # intrinsics exact
            K = np.array(meta["intrinsics"]["K"])
            np.testing.assert_array_equal(K, src.intrinsics.K)
            assert meta["intrinsics"]["frame_id"] == src.intrinsics.frame_id
            assert (meta["intrinsics"]["width"], meta["intrinsics"]["height"]) == src.rgb.shape[
                1::-1
            ]
            # ground truth exact, or flagged self-supervised
            assert meta["self_supervised"] == (src.gt_depth is None)
            assert ("gt.npy" in members) == (src.gt_depth is not None)
            if src.gt_depth is not None:
                gt = np.load(io.BytesIO(members["gt.npy"]))
                assert gt.dtype == np.float32
                np.testing.assert_array_equal(gt, src.gt_depth)
            assert ("lidar.npy" in members) == (rec["bag"] == "robot__run_1")
            seen[rec["bag"]] += 1
        assert (min(stamps), max(stamps)) == (rec["first_stamp_ns"], rec["last_stamp_ns"])
    assert seen == {bag: len(frames) for bag, frames in sources.items()}


def test_lidar_points_in_camera_frame(bags, shards):
    """Stored LiDAR = source points moved by optical_T_lidar, built here from the rig mounts
    and applied with open3d."""
    _, sources = bags
    base_T_optical = CFG_A.camera_mount.matrix @ CAMERA_LINK_T_OPTICAL
    optical_T_lidar = invert_transform(base_T_optical) @ CFG_A.lidar_mount.matrix
    samples = _tar_samples(shards / "robot__run_1-000000.tar")
    for i, key in enumerate(sorted(samples)):
        cloud = sources["robot__run_1"][i].extra["lidar"]
        pcd = o3d.geometry.PointCloud(
            o3d.utility.Vector3dVector(np.stack([cloud["x"], cloud["y"], cloud["z"]], 1))
        )
        expected = np.asarray(pcd.transform(optical_T_lidar).points)
        stored = np.load(io.BytesIO(samples[key]["lidar.npy"]))
        assert stored.dtype == np.float32 and stored.shape == expected.shape
        np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_parallel_extraction_is_identical(bags, shards, tmp_path):
    report = extract([bags[0]], _cfg(tmp_path), workers=2)
    assert report.done == ["b", "real", "robot__run_1"]
    names = sorted(p.name for p in shards.iterdir() if not p.name.endswith(".done"))
    assert names == sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".done"))
    for name in names:
        assert (tmp_path / name).read_bytes() == (shards / name).read_bytes(), name


def test_resume_skips_finished_and_redoes_unfinished(bags, shards, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(shards, out)
    # "b" crashed: no .done, a stray temporary and a shard no complete run would write.
    (out / "b.done").unlink()
    (out / "b-000000.tar").write_bytes(b"garbage")
    (out / "b-000007.tar.tmp").write_bytes(b"partial")
    (out / "b-000009.tar").write_bytes(b"stale")
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("robot__run_1-*")}
    broken = tmp_path / "broken" / "bad_bag"
    broken.mkdir(parents=True)
    (broken / "metadata.yaml").write_text("not: a rosbag2 metadata file\n")

    report = extract([bags[0], broken.parent], _cfg(out), workers=1)
    assert report.done == ["b"] and report.skipped == ["real", "robot__run_1"]
    assert list(report.failed) == ["bad_bag"] and not (out / "bad_bag.done").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("robot__run_1-*")} == finished
    assert not (out / "b-000007.tar.tmp").exists() and not (out / "b-000009.tar").exists()
    for name in ("b-000000.tar", "b-000001.tar", MANIFEST):
        assert (out / name).read_bytes() == (shards / name).read_bytes()


def test_cli_bag_group_and_merge(bags, shards, tmp_path):
    def cli(*args: str) -> int:
        return main([*args, "--out", str(tmp_path), "--shard-size", "2", "--no-progress"])

    # Group 1 of 3 of the sorted bags [b, real, robot__run_1] is "real" alone.
    assert cli(str(bags[0]), "--bag-group", "1/3", "--lidar") == 0
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["real.done"]
    _, records = read_manifest(tmp_path)
    assert [r["bag"] for r in records] == ["real"]
    # The other groups' tasks finish into the same directory; --merge-only gathers them all.
    for i in (0, 2):
        assert cli(str(bags[0]), "--bag-group", f"{i}/3", "--lidar") == 0
    (tmp_path / MANIFEST).unlink()
    assert cli("--merge-only") == 0
    assert (tmp_path / MANIFEST).read_bytes() == (shards / MANIFEST).read_bytes()


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def _sample(seed: int = 0, width: int = 64, height: int = 48) -> dict:
    rng = np.random.default_rng(seed)
    intr = Intrinsics(width, height, fx=50.3, fy=52.1, cx=31.7, cy=22.4, frame_id="cam")
    u, v = intr.pixel_grid()
    depth = (1.5 + 0.01 * u + 0.02 * v + 0.3 * np.sin(u / 5.0)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    target = depth * np.float32(1.01)
    target[rng.random(depth.shape) < 0.1] = np.nan
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return {"rgb": rgb, "depth": depth, "target": target, "intrinsics": intr}


def _assert_same_3d(
    orig: np.ndarray, oi: Intrinsics, aug: np.ndarray, ai: Intrinsics, flipped: bool = False
) -> int:
    """Every valid pixel of ``aug`` back-projects (with ``ai``) onto a 3-D point whose
    projection into the original camera falls in a pixel holding exactly that depth (nearest
    resampling copies values). Returns how many pixels were checked."""
    points = ai.backproject(aug).reshape(-1, 3)
    points = points[np.isfinite(points[:, 2])].astype(np.float64)
    if flipped:
        points[:, 0] *= -1  # a mirror image
    uv, z = oi.project(points)
    # The source pixel is the one containing the projection; a projection on a pixel border
    # (a tie, which OpenCV's fixed-point resize may break either way) may use either side.
    hits = np.zeros(len(z), dtype=bool)
    for du, dv in ((-1e-3, -1e-3), (-1e-3, 1e-3), (1e-3, -1e-3), (1e-3, 1e-3)):
        col = np.clip(np.floor(uv[:, 0] + 0.5 + du), 0, oi.width - 1).astype(int)
        row = np.clip(np.floor(uv[:, 1] + 0.5 + dv), 0, oi.height - 1).astype(int)
        hits |= np.isclose(orig[row, col], z, rtol=1e-6, atol=0)
    assert hits.all(), f"{(~hits).sum()} of {len(z)} points moved"
    return len(z)


def test_crop_and_flip_keep_points_exactly():
    s = _sample()
    P = s["intrinsics"].backproject(s["depth"])
    c = crop(s, 5, 7, 30, 20)
    np.testing.assert_array_equal(c["rgb"], s["rgb"][7:27, 5:35])
    np.testing.assert_allclose(
        c["intrinsics"].backproject(c["depth"]), P[7:27, 5:35], rtol=1e-6, equal_nan=True
    )
    # A window reaching outside the image is padded (rgb 0, depth NaN).
    p = crop(s, -3, 40, 10, 12)
    assert (p["rgb"][:, :3] == 0).all() and np.isnan(p["depth"][8:]).all()
    np.testing.assert_array_equal(p["depth"][:8, 3:], s["depth"][40:, :7])
    f = hflip(s)
    assert f["intrinsics"].cx == pytest.approx(64 - 1 - 31.7)
    Pf = f["intrinsics"].backproject(f["depth"])[:, ::-1] * np.array([-1, 1, 1], np.float32)
    np.testing.assert_allclose(Pf, P, rtol=1e-5, atol=1e-6, equal_nan=True)
    twice = hflip(f)
    np.testing.assert_array_equal(twice["rgb"], s["rgb"])
    assert twice["intrinsics"] == s["intrinsics"]


@pytest.mark.parametrize("size", [(40, 30), (101, 77), (64, 20)])
def test_resize_keeps_geometry(size):
    s = _sample(1)
    r = resize(s, *size)
    assert r["rgb"].shape == (size[1], size[0], 3) and r["intrinsics"].size == size
    for key in ("depth", "target"):
        n = _assert_same_3d(s[key], s["intrinsics"], r[key], r["intrinsics"])
        assert n > 0.5 * size[0] * size[1] * 0.8


def test_unified_focal_resize():
    s = _sample(2)
    u = unified_focal_resize(s, 40.0)
    # W' = round(40 / 50.3 * 64) = 51, H' = round(40 / 52.1 * 48) = 37
    assert u["intrinsics"].size == (51, 37)
    assert u["intrinsics"].fx == pytest.approx(50.3 * 51 / 64)
    assert u["intrinsics"].fy == pytest.approx(52.1 * 37 / 48)
    assert abs(u["intrinsics"].fx - 40.0) < 40.0 / 51 and abs(u["intrinsics"].fy - 40.0) < 1.0
    _assert_same_3d(s["depth"], s["intrinsics"], u["depth"], u["intrinsics"])


def _augment_and_flipped(s: dict, cfg: AugmentConfig, seed: int) -> tuple[dict, bool]:
    """Augment, and tell whether the flip fired: augment draws the same numbers whatever
    p_flip is, so a run with p_flip = 0 differs from the real one exactly by the flip."""
    out = augment(s, cfg, np.random.default_rng(seed))
    no_flip = augment(s, replace(cfg, p_flip=0.0), np.random.default_rng(seed))
    return out, not np.array_equal(out["rgb"], no_flip["rgb"])


def test_random_geometric_augmentation_is_consistent():
    s = _sample(3)
    geometric = dict(p_color=0.0, p_jpeg=0.0, p_blur=0.0, p_noise=0.0)
    flips = 0
    for seed in range(12):
        cfg = AugmentConfig(out_size=(48, 40), p_flip=0.5, **geometric)
        out, flipped = _augment_and_flipped(s, cfg, seed)
        flips += flipped
        assert out["rgb"].shape == (40, 48, 3) and out["intrinsics"].size == (48, 40)
        for key in ("depth", "target"):
            _assert_same_3d(s[key], s["intrinsics"], out[key], out["intrinsics"], flipped)
        # DepthLM mode: focal unified (W' = round(45 / 50.3 * 64) = 57), then a crop at that
        # scale, padded where the image is too small.
        cfg = AugmentConfig(out_size=(40, 44), focal=45.0, p_flip=0.5, **geometric)
        out, flipped = _augment_and_flipped(s, cfg, seed)
        assert out["intrinsics"].size == (40, 44)
        assert out["intrinsics"].fx == pytest.approx(50.3 * 57 / 64)
        _assert_same_3d(s["depth"], s["intrinsics"], out["depth"], out["intrinsics"], flipped)
    assert 0 < flips < 12
    # The random resized crop alone, with non-square ratios, still tracks fx != fy.
    cfg = AugmentConfig(crop_scale=(0.2, 0.5), crop_ratio=(0.5, 2.0))
    for seed in range(6):
        out = random_resized_crop(s, cfg, np.random.default_rng(seed))
        assert out["intrinsics"].size == (64, 48)
        _assert_same_3d(s["depth"], s["intrinsics"], out["depth"], out["intrinsics"])


def test_photometric_ops_hand_values():
    px = np.array([[[200, 100, 50]]], dtype=np.uint8)
    np.testing.assert_array_equal(adjust_brightness(px, 1.5), [[[255, 150, 75]]])
    gray = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # 124.2
    np.testing.assert_array_equal(adjust_saturation(px, 0.0), [[[124, 124, 124]]])
    assert gray == pytest.approx(124.2)
    two = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(adjust_contrast(two, 0.0), np.full((1, 2, 3), 128))
    np.testing.assert_array_equal(adjust_contrast(two, 1.0), two)
    red = np.array([[[255, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(adjust_hue(red, 0.5), [[[0, 255, 255]]])  # cyan
    np.testing.assert_array_equal(adjust_hue(red, 1 / 3), [[[0, 255, 0]]])  # green
    k = motion_blur_kernel(5, 0.0)
    np.testing.assert_allclose(k[2], 0.2)
    np.testing.assert_array_equal(k[[0, 1, 3, 4]], 0)
    np.testing.assert_allclose(motion_blur_kernel(5, 90.0), k.T, atol=1e-7)
    for angle in (30.0, -45.0, 120.0):
        k = motion_blur_kernel(7, angle)
        assert k.sum() == pytest.approx(1.0) and np.allclose(k, k[::-1, ::-1])  # centred
        # The kernel's principal axis (second moments, image rows pointing down) is the angle.
        rows, cols = np.mgrid[-3:4, -3:4]
        cxx, cyy, cxy = (k * cols**2).sum(), (k * rows**2).sum(), -(k * cols * rows).sum()
        axis = np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy))
        assert (axis - angle + 90) % 180 - 90 == pytest.approx(0, abs=2.0)
    dot = np.zeros((9, 9, 3), np.uint8)
    dot[4, 4] = 250
    blurred = motion_blur(dot, 5, 0.0)
    np.testing.assert_array_equal(blurred[4, 2:7, 0], 50)
    assert blurred[:4].max() == 0 and blurred[5:].max() == 0
    # Shot noise: value v, peak p photons at white -> mean v, variance 255 * v / p.
    flat = np.full((200, 200, 3), 100, np.uint8)
    noisy = shot_noise(flat, 50.0, np.random.default_rng(0)).astype(np.float64)
    assert noisy.mean() == pytest.approx(100, rel=0.01)
    assert noisy.std() == pytest.approx(np.sqrt(255 * 100 / 50), rel=0.03)
    img = _sample()["rgb"]
    jpg = jpeg_reencode(img, 50)
    assert jpg.shape == img.shape and not np.array_equal(jpg, img)


def test_photometric_augmentation_leaves_geometry_alone():
    s = _sample(4)
    keep = {k: v.copy() for k, v in s.items() if isinstance(v, np.ndarray)}
    cfg = AugmentConfig(p_crop=0.0, p_flip=0.0, p_color=1.0, p_jpeg=1.0, p_blur=1.0, p_noise=1.0)
    out = augment(s, cfg, np.random.default_rng(0))
    assert out["intrinsics"] == s["intrinsics"]
    np.testing.assert_array_equal(out["depth"], s["depth"])
    np.testing.assert_array_equal(out["target"], s["target"])
    assert out["rgb"].dtype == np.uint8 and not np.array_equal(out["rgb"], s["rgb"])
    for k, v in keep.items():  # the input sample is not modified
        np.testing.assert_array_equal(s[k], v)
    again = augment(s, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(again["rgb"], out["rgb"])


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


def test_dataset_samples_match_source(bags, shards):
    _, sources = bags
    ds = ShardDataset(shards)
    items = list(ds)
    assert len(items) == len(ds) == N_SAMPLES
    for it in items:
        bag, _, idx = it["key"].rpartition("_")
        src = sources[bag][int(idx)]
        H, W = src.rgb.shape[:2]
        assert it["image"].shape == (3, H, W) and it["depth"].shape == (1, H, W)
        np.testing.assert_array_equal(
            (it["image"] * 255).round().byte().permute(1, 2, 0).numpy(), src.rgb
        )
        raw = np.nan_to_num(src.depth, nan=0.0)
        np.testing.assert_allclose(it["depth"][0].numpy(), raw, atol=0.0005 + 1e-6)
        expected = src.depth if src.gt_depth is None else src.gt_depth
        assert bool(it["self_supervised"]) == (src.gt_depth is None)
        target = it["target"][0].numpy()
        if src.gt_depth is None:  # raw depth as the target, on its valid pixels
            np.testing.assert_allclose(target, raw, atol=0.0005 + 1e-6)
        else:
            np.testing.assert_array_equal(target, np.nan_to_num(expected, nan=0.0))
        np.testing.assert_array_equal(it["valid"][0].numpy(), target > 0)
        np.testing.assert_array_equal(it["intrinsics"].numpy(), src.intrinsics.K.astype(np.float32))
    gt_only = ShardDataset(shards, target="gt")
    assert gt_only.num_samples == N_SAMPLES - 2


def test_partition_every_sample_once(shards):
    """World sizes 1 / 2 / 3, 0 or 2 workers, 2 epochs: every sample exactly once per epoch,
    a new order each epoch, and each rank's stream independent of its worker count."""
    all_keys = {f"b_{i:07d}" for i in range(4)} | {f"real_{i:07d}" for i in range(2)}
    all_keys |= {f"robot__run_1_{i:07d}" for i in range(5)}
    streams = {}  # (num_workers, world_size, epoch, rank) -> keys in arrival order
    for num_workers in (0, 2):
        for world_size in (1, 2, 3):
            orders = []
            for epoch in (0, 1):
                per_rank = []
                for rank in range(world_size):
                    ds = ShardDataset(shards, seed=5, rank=rank, world_size=world_size)
                    ds.set_epoch(epoch)
                    loader = ShardLoader(ds, 2, num_workers, collate_fn=Collate(size=(32, 24)))
                    keys = [k for batch in loader for k in batch["key"]]
                    assert len(keys) == len(set(keys)) == ds.epoch_lengths()[rank]
                    assert ds.state_dict()["epoch"] == epoch + 1  # moved on when exhausted
                    per_rank.append(keys)
                    streams[num_workers, world_size, epoch, rank] = keys
                # Disjoint and complete; the first N % world_size ranks get one more.
                merged = [k for keys in per_rank for k in keys]
                assert len(merged) == len(set(merged)) and set(merged) == all_keys
                base, extra = divmod(N_SAMPLES, world_size)
                assert [len(k) for k in per_rank] == [base + (r < extra) for r in range(world_size)]
                orders.append(merged)
            assert orders[0] != orders[1]  # a new permutation every epoch
    for (num_workers, *rest), keys in streams.items():
        if num_workers == 2:
            assert keys == streams[(0, *rest)]


def _run(loader: ShardLoader, epochs: range, stop_after: int | None = None) -> list[dict]:
    out = []
    for epoch in epochs:
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            out.append(batch)
            if stop_after is not None and len(out) == stop_after:
                return out
    return out


def test_resume_gives_the_uninterrupted_stream(shards):
    aug = AugmentConfig(out_size=(40, 32))

    def loader(state=None):
        ds = ShardDataset(shards, augment_cfg=aug, seed=1, rank=1, world_size=2, lidar=True)
        if state is not None:
            ds.load_state_dict(state)
        return ShardLoader(ds, batch_size=2, num_workers=2)

    full = _run(loader(), range(2))
    assert len(full) == 2 * 3  # rank 1 of 2 gets 5 samples: batches of 2, 2, 1
    for stop in (2, 3, 4):  # mid-epoch, after the last batch of an epoch, in the next
        first = loader()
        head = _run(first, range(2), stop_after=stop)
        state = first.state_dict()
        assert (state["epoch"], state["consumed"]) == ((0, 4), (0, 5), (1, 2))[stop - 2]
        resumed = loader(state)
        tail = _run(resumed, range(state["epoch"], 2))
        got = head + tail
        assert len(got) == len(full)
        for a, b in zip(got, full, strict=True):
            assert a["key"] == b["key"]
            for name in ("image", "depth", "target", "prompt", "intrinsics", "index"):
                assert torch.equal(a[name], b[name]), name
    with pytest.raises(ValueError, match="world_size"):
        ShardDataset(shards, seed=1, world_size=3).load_state_dict(state)


def test_lidar_prompt_lands_on_the_target(shards):
    cfg = AugmentConfig(p_flip=1.0, crop_scale=(0.5, 0.8), p_color=0.0, p_jpeg=0.0)
    ds = ShardDataset(shards, augment_cfg=cfg, lidar=True)
    checked = 0
    for it in ds:
        prompt, target = it["prompt"][0], it["target"][0]
        if not it["key"].startswith("robot"):
            assert prompt.max() == 0  # no LiDAR in those bags
            continue
        both = (prompt > 0) & (target > 0)
        assert both.sum() > 20
        # Flipped and cropped, the LiDAR still hits the surfaces the ground truth describes.
        assert (prompt[both] - target[both]).abs().median() < 0.05
        checked += 1
    assert checked == 5


def test_collate_to_one_size_keeps_geometry(shards):
    ds = ShardDataset(shards)
    items = list(ds)
    batch = Collate(size=(64, 48))(items)
    assert batch["image"].shape == (N_SAMPLES, 3, 48, 64)
    assert batch["target"].shape == batch["valid"].shape == (N_SAMPLES, 1, 48, 64)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["key"] == [it["key"] for it in items]
    for i, it in enumerate(items):
        _, h, w = it["image"].shape
        oi = Intrinsics.from_K(it["intrinsics"].numpy(), w, h)
        ni = Intrinsics.from_K(batch["intrinsics"][i].numpy(), 64, 48)
        target = it["target"][0].numpy()
        new = batch["target"][i, 0].numpy()
        _assert_same_3d(
            np.where(target > 0, target, np.nan), oi, np.where(new > 0, new, np.nan), ni
        )
    with pytest.raises(ValueError, match="size"):
        Collate()(items)
