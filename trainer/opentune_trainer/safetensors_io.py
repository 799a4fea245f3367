"""Read and write the safetensors format without the `safetensors` package.

Format: 8-byte little-endian header length N, N bytes of JSON header
({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then raw
little-endian tensor bytes. Reading uses the `safetensors` package when it is installed (mmap,
battle-tested) and our own mmap reader otherwise. Writing is always ours, so that the same tensors
give the same bytes on every machine (init-tiny depends on it).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import warnings
from collections.abc import Iterable

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

try:  # optional: faster, zero-copy loading
    from safetensors import safe_open as _safe_open  # type: ignore
except ImportError:  # pragma: no cover - depends on the machine
    _safe_open = None


def read_header(path: str) -> dict[str, dict]:
    """The JSON header (tensor names → dtype/shape/offsets, plus `__metadata__`)."""
    return _header_and_start(path)[0]


def _header_and_start(path: str):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise ValueError(f"{path}: not a safetensors file (header of {n} bytes)")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not an object")
    return header, 8 + n


def load(path: str, keys: Iterable[str] | None = None, use_lib: bool = True) -> dict[str, torch.Tensor]:
    """Load tensors (all, or only `keys`) from one file onto the CPU."""
    wanted = None if keys is None else set(keys)
    if use_lib and _safe_open is not None:
        out = {}
        with _safe_open(path, framework="pt") as f:
            for k in f.keys():
                if wanted is None or k in wanted:
                    out[k] = f.get_tensor(k)
        return out
    header, start = _header_and_start(path)
    out = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        try:
            for name, info in header.items():
                if name == "__metadata__" or (wanted is not None and name not in wanted):
                    continue
                out[name] = _tensor_from(mm, start, info, path, name)
        finally:
            if mm is not None:
                mm.close()
    return out


def _tensor_from(mm, start: int, info: dict, path: str, name: str) -> torch.Tensor:
    dtype = DTYPES.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    shape = list(info["shape"])
    begin, end = info["data_offsets"]
    numel = 1
    for s in shape:
        numel *= s
    itemsize = torch.empty((), dtype=dtype).element_size()
    if end - begin != numel * itemsize:
        raise ValueError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    with warnings.catch_warnings():  # the mmap is read-only; we copy right away
        warnings.simplefilter("ignore")
        t = torch.frombuffer(mm, dtype=dtype, count=numel, offset=start + begin)
    return t.reshape(shape).clone()


WRITE_CHUNK = 1 << 28  # bytes per write() call


def _write_tensor(f, t: torch.Tensor) -> None:
    """The tensor's raw bytes, without a copy. A ctypes array over its memory, not string_at:
    string_at's size is a C int, so a tensor of 2 GiB failed and one of 4 GiB wrote short."""
    t = t.detach().to("cpu").contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return
    view = memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")
    for start in range(0, n, WRITE_CHUNK):
        f.write(view[start : start + WRITE_CHUNK])


def save(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to `path` (sorted by name, so equal inputs give equal bytes)."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"cannot save {name}: dtype {t.dtype}")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the spec pads the header with spaces to 8-byte alignment
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            _write_tensor(f, tensors[name])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
