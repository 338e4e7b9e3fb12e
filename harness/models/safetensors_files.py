"""A model's safetensors checkpoint read back tensor by tensor, without mapping it into the process.

    files = SafetensorsFiles.find(model_dir)       # None when the folder has no safetensors
    w = files.read("model.layers.0.mlp.up_proj.weight")                 # a new tensor, the file's dtype
    files.read_into("model.embed_tokens.weight", buf, start=0)          # a flat range into a buffer

What harness.reference uses to keep the initial weights where they already are: in the files the
model was loaded from. The reads are plain `os.preadv` into the tensor's own memory: no mmap, so the
file's pages stay in the page cache (which the kernel may drop and read again) and never count in the
process's resident set, where safetensors' own `safe_open` maps the whole file and every page it
touches counts. The files stay open from `find` on: a folder rebuilt and renamed into place later does
not change what is read (the open descriptors keep the original files).

A single `model.safetensors` or a sharded checkpoint (`model.safetensors.index.json` and its shards);
a Hugging Face id is looked up in the local hub cache only (no download).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


@dataclass(frozen=True)
class Entry:
    fd: int
    offset: int  # of the tensor's first byte in the file
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _header(fd: int, path: Path) -> tuple[dict, int]:
    """The header's JSON and the offset of the data that follows it."""
    head = os.pread(fd, 8, 0)
    if len(head) != 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its header)")
    (n,) = struct.unpack("<Q", head)
    raw = os.pread(fd, n, 8)
    if len(raw) != n:
        raise ValueError(f"{path}: truncated safetensors header")
    return json.loads(raw), 8 + n


def _local_folder(model_dir: str | os.PathLike) -> Optional[Path]:
    p = Path(model_dir)
    if p.is_dir():
        return p
    try:  # a hub id: its snapshot in the local cache, if there is one
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model_dir), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a repo id, no huggingface_hub: no files
        return None


class SafetensorsFiles:
    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.entries: dict[str, Entry] = {}
        self._fds: list[int] = []
        try:
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                self._fds.append(fd)
                head, base = _header(fd, path)
                for name, e in head.items():
                    if name == "__metadata__" or e["dtype"] not in DTYPES:
                        continue
                    start, end = e["data_offsets"]
                    entry = Entry(fd, base + start, DTYPES[e["dtype"]], tuple(e["shape"]))
                    if end - start != entry.numel * entry.dtype.itemsize:
                        raise ValueError(f"{path}: tensor {name!r} has {end - start} bytes for shape {entry.shape}")
                    self.entries[name] = entry
        except BaseException:
            self.close()
            raise

    @classmethod
    def find(cls, model_dir: str | os.PathLike) -> Optional["SafetensorsFiles"]:
        """The checkpoint of a model folder (or cached hub id): one file or an index of shards; None if none."""
        folder = _local_folder(model_dir)
        if folder is None:
            return None
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return cls([folder / s for s in shards])
        single = folder / "model.safetensors"
        return cls([single]) if single.is_file() else None

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def entry(self, name: str) -> Entry:
        return self.entries[name]

    def read_into(self, name: str, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Entries start .. start+out.numel() of the flat tensor `name` into `out` (contiguous, CPU, the
        file's dtype); returns out."""
        e = self.entries[name]
        if not self._fds:  # a closed descriptor's number may belong to another file by now
            raise ValueError(f"read_into {name!r}: the checkpoint files are closed")
        if out.dtype != e.dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"read_into {name!r}: out must be a contiguous CPU {e.dtype} tensor, got {out.dtype}")
        if start < 0 or start + out.numel() > e.numel:
            raise ValueError(f"read_into {name!r}: entries {start}..{start + out.numel()} outside 0..{e.numel}")
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        pos, done = e.offset + start * e.dtype.itemsize, 0
        while done < len(view):  # preadv may return short reads
            n = os.preadv(e.fd, [view[done:]], pos + done)
            if n <= 0:
                raise OSError(f"{self.paths}: unexpected end of file reading {name!r}")
            done += n
        return out

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor `name`, in the file's dtype and shape (a new tensor)."""
        e = self.entries[name]
        return self.read_into(name, torch.empty(e.shape, dtype=e.dtype))

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
