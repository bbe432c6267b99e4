"""WebDataset-style tar shards of RGB-D samples: format, writing, indexing, reading.

A shard is a plain (uncompressed) tar in which consecutive members sharing a key form one
sample (the key is a member name up to its first dot, as in WebDataset)::

    {key}.rgb.png | {key}.rgb.jpg   colour (PNG, lossless, by default), RGB once decoded
    {key}.depth.png                 raw sensor depth, 16-bit millimetres, 0 = no measurement
    {key}.gt.npy                    float32 metres, NaN = unknown: ground truth or pseudo-label
    {key}.lidar.npy                 float32 (N, 3) points in the camera optical frame
    {key}.radar.npy                 float32 (N, 3) radar points in the camera optical frame
    {key}.prior.npy                 float16 metres, NaN = none: a prompt-free model's depth of
                                    the colour image (the MetricAnything teacher's prior P_d)
    {key}.pseudo.npy                float32 metres, NaN = none: a teacher's pseudo-label
                                    (``python -m training.pseudo_label``; provenance in the
                                    metadata's ``pseudo_label``)
    {key}.instance.png              16-bit PNG of instance ids, 0 = background (``extract
                                    --instances``: the simulator's ``/ground_truth/instances``)
    {key}.json                      metadata: intrinsics, stamp, bag, topics, self_supervised;
                                    with ``--instances`` also ``targets``: the frame's target
                                    prompts ``[{"id", "text", "box": [x, y, w, h]}, ...]``
                                    (``id`` = the instance id in ``instance.png`` for simulated
                                    bags; ``box`` in the stored image's pixels)

Next to every ``X.tar`` the writer puts ``X.idx.json``, the byte offset and size of every
member. A loader that visits samples in a global random order then reads a sample with one
``pread`` per member instead of walking the tar headers; shards without an index (made by
other tools) are indexed by streaming through them once with :mod:`tarfile`.

Tars are written deterministically (fixed owner, mode, GNU format, mtime = the sample's stamp)
and atomically (temporary name, then rename), so the same input gives byte-identical shards
and a crash never leaves a complete-looking shard behind.

``manifest.jsonl`` lists one shard per line (paths relative to the manifest's directory, so an
output directory can be copied elsewhere as a whole).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics
from depth_perception.core.depth import depth_from_mm, depth_to_mm

MANIFEST = "manifest.jsonl"
INDEX_SUFFIX = ".idx.json"
#: Member extensions of a sample (the part of the member name after the key).
RGB_EXTS = ("rgb.png", "rgb.jpg")
DEPTH_EXT = "depth.png"
GT_EXT = "gt.npy"
LIDAR_EXT = "lidar.npy"
RADAR_EXT = "radar.npy"
PRIOR_EXT = "prior.npy"
PSEUDO_EXT = "pseudo.npy"
INSTANCE_EXT = "instance.png"
META_EXT = "json"

# (key, [(ext, data offset, size), ...]) per sample, in tar order.
ShardIndex = list[tuple[str, list[tuple[str, int, int]]]]


# ---------------------------------------------------------------------------------------------
# Sample encoding
# ---------------------------------------------------------------------------------------------


def intrinsics_to_meta(intr: Intrinsics) -> dict:
    return {
        "width": intr.width,
        "height": intr.height,
        "K": intr.K.tolist(),
        "D": [float(d) for d in intr.D],
        "distortion_model": intr.distortion_model,
        "frame_id": intr.frame_id,
    }


def intrinsics_from_meta(meta: dict) -> Intrinsics:
    return Intrinsics.from_K(
        meta["K"],
        meta["width"],
        meta["height"],
        D=meta.get("D", ()),
        distortion_model=meta.get("distortion_model", "plumb_bob"),
        frame_id=meta.get("frame_id", ""),
    )


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def encode_sample(
    rgb: np.ndarray,
    depth: np.ndarray,
    meta: dict,
    gt: np.ndarray | None = None,
    lidar: np.ndarray | None = None,
    rgb_format: str = "png",
    jpeg_quality: int = 95,
    radar: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    instance: np.ndarray | None = None,
) -> dict[str, bytes]:
    """One sample's members (extension -> bytes). ``depth`` / ``gt`` are float32 metres;
    ``prior`` (metres) is stored as float16 (it only enters scale-and-shift fits);
    ``instance`` (ids in [0, 65535]) as a lossless 16-bit PNG."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if rgb_format == "png":
        ok, rgb_buf = cv2.imencode(".png", bgr)
    elif rgb_format == "jpg":
        ok, rgb_buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        raise ValueError(f"rgb_format must be 'png' or 'jpg', got {rgb_format!r}")
    if not ok:
        raise RuntimeError("could not encode the colour image")
    ok, depth_buf = cv2.imencode(".png", depth_to_mm(depth))
    if not ok:
        raise RuntimeError("could not encode the depth image")
    members = {f"rgb.{rgb_format}": rgb_buf.tobytes(), DEPTH_EXT: depth_buf.tobytes()}
    if gt is not None:
        members[GT_EXT] = _npy_bytes(np.asarray(gt, dtype=np.float32))
    if lidar is not None:
        members[LIDAR_EXT] = _npy_bytes(np.asarray(lidar, dtype=np.float32).reshape(-1, 3))
    if radar is not None:
        members[RADAR_EXT] = _npy_bytes(np.asarray(radar, dtype=np.float32).reshape(-1, 3))
    if prior is not None:
        prior = np.asarray(prior, dtype=np.float32)
        prior = np.where(np.isfinite(prior) & (prior > 0), prior, np.nan)
        members[PRIOR_EXT] = _npy_bytes(prior.astype(np.float16))
    if instance is not None:
        ids = np.asarray(instance)
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max):
            raise ValueError("instance ids must be in [0, 65535] to fit a 16-bit PNG")
        ok, instance_buf = cv2.imencode(".png", ids.astype(np.uint16))
        if not ok:
            raise RuntimeError("could not encode the instance image")
        members[INSTANCE_EXT] = instance_buf.tobytes()
    # sort_keys: the same sample always serializes to the same bytes.
    members[META_EXT] = json.dumps(meta, sort_keys=True).encode()
    return members


def decode_sample(members: dict[str, bytes]) -> dict:
    """Members -> {rgb (H,W,3) uint8 RGB, depth float32 m NaN holes, gt | None, lidar | None,
    radar | None, prior (float32 m, NaN = none) | None, pseudo (float32 m) | None, instance
    ((H, W) uint16 ids, 0 = background) | None, targets (the metadata's list, [] without
    one), meta dict, intrinsics}."""
    rgb_ext = next((e for e in RGB_EXTS if e in members), None)
    if rgb_ext is None or DEPTH_EXT not in members or META_EXT not in members:
        raise ValueError(f"incomplete sample, members: {sorted(members)}")
    bgr = cv2.imdecode(np.frombuffer(members[rgb_ext], np.uint8), cv2.IMREAD_COLOR)
    raw = cv2.imdecode(np.frombuffer(members[DEPTH_EXT], np.uint8), cv2.IMREAD_UNCHANGED)
    if bgr is None or raw is None or raw.dtype != np.uint16:
        raise ValueError("could not decode the colour or 16-bit depth image")
    meta = json.loads(members[META_EXT])

    def npy(ext: str) -> np.ndarray | None:
        return np.load(io.BytesIO(members[ext]), allow_pickle=False) if ext in members else None

    prior = npy(PRIOR_EXT)
    instance = None
    if INSTANCE_EXT in members:
        instance = cv2.imdecode(
            np.frombuffer(members[INSTANCE_EXT], np.uint8), cv2.IMREAD_UNCHANGED
        )
        if instance is None or instance.dtype != np.uint16 or instance.ndim != 2:
            raise ValueError("could not decode the 16-bit instance image")
    return {
        "rgb": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
        "depth": depth_from_mm(raw),
        "gt": npy(GT_EXT),
        "lidar": npy(LIDAR_EXT),
        "radar": npy(RADAR_EXT),
        "prior": None if prior is None else prior.astype(np.float32),
        "pseudo": npy(PSEUDO_EXT),
        "instance": instance,
        "targets": list(meta.get("targets", [])),
        "meta": meta,
        "intrinsics": intrinsics_from_meta(meta["intrinsics"]),
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass
class ShardRecord:
    """One line of ``manifest.jsonl``."""

    path: str  # the tar, relative to the manifest's directory
    index: str  # its sidecar index, same directory
    bag: str
    n: int  # samples
    first_stamp_ns: int
    last_stamp_ns: int
    sha256: str
    bytes: int
    n_gt: int  # samples with a gt.npy member
    n_lidar: int
    n_pseudo: int = 0  # samples with a pseudo.npy member (a teacher's pseudo-label)
    n_instances: int = 0  # samples with an instance.png member (extract --instances)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _replace_atomic(data: bytes, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


class ShardWriter:
    """Writes samples into ``{prefix}-{k:06d}.tar`` shards of ``shard_size`` samples each.

    Each shard is built under ``*.tar.tmp`` and renamed when complete (after its index);
    :meth:`close` returns the records of all shards. Used as a context manager, an exception
    removes the unfinished shard.
    """

    def __init__(
        self, out_dir: str | Path, prefix: str, shard_size: int, bag: str = "", first: int = 0
    ) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.first = int(first)  # number of the first shard (a rewritten shard keeps its name)
        self.shard_size = int(shard_size)
        self.bag = bag or prefix
        self.records: list[ShardRecord] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._index: ShardIndex = []
        self._stamps: list[int] = []
        self._n_gt = self._n_lidar = self._n_pseudo = self._n_instances = 0

    def shard_path(self, k: int) -> Path:
        """The ``k``-th shard this writer writes."""
        return self.out_dir / f"{self.prefix}-{self.first + k:06d}.tar"

    def _open(self) -> None:
        self._tmp = self.shard_path(len(self.records)).with_suffix(".tar.tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)
        self._index, self._stamps = [], []
        self._n_gt = self._n_lidar = self._n_pseudo = self._n_instances = 0

    def write(self, key: str, members: dict[str, bytes], stamp_ns: int) -> None:
        """Append one sample; ``key`` must not contain dots (they separate the extension)."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if self._tar is None:
            self._open()
        tar = self._tar
        entries = []
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = int(stamp_ns // 1_000_000_000)
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            start = tar.offset
            tar.addfile(info, io.BytesIO(data))
            # addfile wrote header block(s) then the data padded to whole blocks.
            header = tar.offset - start - _padded(len(data))
            entries.append((ext, start + header, len(data)))
        self._index.append((key, entries))
        self._stamps.append(int(stamp_ns))
        self._n_gt += GT_EXT in members
        self._n_lidar += LIDAR_EXT in members
        self._n_pseudo += PSEUDO_EXT in members
        self._n_instances += INSTANCE_EXT in members
        if len(self._index) >= self.shard_size:
            self._finish()

    def _finish(self) -> None:
        self._tar.close()
        final = self.shard_path(len(self.records))
        index_path = final.with_suffix(INDEX_SUFFIX)
        _replace_atomic(json.dumps({"samples": self._index}).encode(), index_path)
        digest, size = sha256_file(self._tmp), self._tmp.stat().st_size
        os.replace(self._tmp, final)
        self.records.append(
            ShardRecord(
                path=final.name,
                index=index_path.name,
                bag=self.bag,
                n=len(self._index),
                first_stamp_ns=min(self._stamps),
                last_stamp_ns=max(self._stamps),
                sha256=digest,
                bytes=size,
                n_gt=self._n_gt,
                n_lidar=self._n_lidar,
                n_pseudo=self._n_pseudo,
                n_instances=self._n_instances,
            )
        )
        self._tar = self._tmp = None

    def close(self) -> list[ShardRecord]:
        if self._tar is not None:
            self._finish()
        return self.records

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self._tar = self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def write_manifest(out_dir: str | Path, records: list[dict | ShardRecord]) -> Path:
    """Write ``manifest.jsonl`` atomically (a concurrent reader sees the old or the new one)."""
    lines = [
        r.to_json() if isinstance(r, ShardRecord) else json.dumps(r, sort_keys=True)
        for r in records
    ]
    path = Path(out_dir) / MANIFEST
    _replace_atomic("".join(line + "\n" for line in lines).encode(), path)
    return path


def read_manifest(manifest_or_dir: str | Path) -> tuple[Path, list[dict]]:
    """(directory the shard paths are relative to, one dict per shard)."""
    path = Path(manifest_or_dir)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path} (run python -m training.extract first)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return path.parent, records


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    """Member name -> (key, extension): the key ends at the first dot of the base name."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, {ext: bytes}) samples through a tar front to back (works on pipes too)."""
    key, members = None, {}
    with tarfile.open(path, "r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            k, ext = _split_name(info.name)
            if k != key and members:
                yield key, members
                members = {}
            key = k
            members[ext] = tar.extractfile(info).read()
    if members:
        yield key, members


def scan_index(path: str | Path) -> ShardIndex:
    """Index a tar by streaming through its headers with tarfile (no extraction)."""
    index: ShardIndex = []
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = _split_name(info.name)
            if not index or index[-1][0] != key:
                index.append((key, []))
            index[-1][1].append((ext, info.offset_data, info.size))
    return index


def load_index(path: str | Path) -> ShardIndex:
    """The sidecar index of a shard when present, else a scan of the tar."""
    path = Path(path)
    sidecar = path.with_suffix(INDEX_SUFFIX)
    if sidecar.is_file():
        samples = json.loads(sidecar.read_text())["samples"]
        return [(key, [tuple(e) for e in entries]) for key, entries in samples]
    return scan_index(path)


class ShardReader:
    """Random access to the samples of indexed shards, with small LRU caches.

    Holds open file descriptors: make one per process (DataLoader worker) and close it.
    """

    def __init__(self, max_open: int = 8, max_indexes: int = 256) -> None:
        self.max_open = max_open
        self.max_indexes = max_indexes
        self._fds: OrderedDict[Path, int] = OrderedDict()
        self._indexes: OrderedDict[Path, ShardIndex] = OrderedDict()

    @staticmethod
    def _lru_get(cache: OrderedDict, key, make, limit: int, drop=None):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        if len(cache) > limit:
            _, old = cache.popitem(last=False)
            if drop is not None:
                drop(old)
        return value

    def index(self, path: Path) -> ShardIndex:
        return self._lru_get(self._indexes, path, lambda: load_index(path), self.max_indexes)

    def read(self, path: str | Path, position: int) -> tuple[str, dict[str, bytes]]:
        """(key, {ext: bytes}) of the ``position``-th sample of the shard at ``path``."""
        path = Path(path)
        key, entries = self.index(path)[position]
        fd = self._lru_get(
            self._fds, path, lambda: os.open(path, os.O_RDONLY), self.max_open, os.close
        )
        members = {}
        for ext, offset, size in entries:
            data = os.pread(fd, size, offset)
            if len(data) != size:
                raise OSError(f"{path}: short read of {key}.{ext} (truncated shard?)")
            members[ext] = data
        return key, members

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        self._indexes.clear()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
