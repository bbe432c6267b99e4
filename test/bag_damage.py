"""Tiny bags and the ways tests damage them: a garbled sqlite3 record, a flipped MCAP byte."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from depth_perception.io.bag import _mcap_data_section, _McapChunk, write_sim_bag
from depth_perception.sim.sequence import SequenceConfig

RGB_TOPIC = "/camera/rgb/image_rect_color"


def tiny_bag(path: Path, storage: str = "sqlite3", frames: int = 6, lidar: bool = True) -> Path:
    """64x48 frames at 10 Hz; with the LiDAR, 6 frames make two MCAP chunks (~1 MiB each)."""
    cfg = SequenceConfig(
        scene_kind="tabletop", seed=0, n_frames=frames, fps=10.0, width=64, height=48, lidar=lidar
    )
    write_sim_bag(path, cfg, storage=storage, progress=False)
    return path


def garble_sqlite_message(bag: Path, index: int, topic: str = RGB_TOPIC) -> None:
    """Overwrite the ``index``-th message of ``topic`` with as many 0xff bytes."""
    with sqlite3.connect(next(bag.glob("*.db3"))) as db:
        rows = db.execute(
            "SELECT m.id, length(m.data) FROM messages m JOIN topics t ON t.id = m.topic_id "
            "WHERE t.name = ? ORDER BY m.timestamp",
            (topic,),
        ).fetchall()
        msg_id, size = rows[index]
        db.execute("UPDATE messages SET data = ? WHERE id = ?", (b"\xff" * size, msg_id))


def mcap_chunks(bag: Path) -> tuple[Path, list[_McapChunk]]:
    file = next(bag.glob("*.mcap"))
    with file.open("rb") as f:
        return file, _mcap_data_section(f, file)[0]


def flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


def flip_chunk_byte(bag: Path, chunk_index: int) -> tuple[Path, _McapChunk]:
    """Flip one byte in the middle of a chunk's records; returns the file and the chunk."""
    file, chunks = mcap_chunks(bag)
    chunk = chunks[chunk_index]
    flip_byte(file, chunk.data_at + chunk.data_size // 2)
    return file, chunk
