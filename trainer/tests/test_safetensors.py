import json
import struct

import pytest
import torch

from opentune_trainer import safetensors_io as st


def sample():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 5, generator=g),
        "b.bf16": torch.randn(4, 2, generator=g).to(torch.bfloat16),
        "c.f16": torch.randn(7, generator=g).to(torch.float16),
        "d.i64": torch.arange(6, dtype=torch.int64).view(2, 3),
        "e.i32": torch.tensor([-100, 5], dtype=torch.int32),
        "f.bool": torch.tensor([True, False, True]),
        "g.empty": torch.zeros(0, 4),
        "h.scalar": torch.tensor(3.5, dtype=torch.float64),
    }


@pytest.mark.parametrize("use_lib", [False, True])
def test_round_trip(tmp_path, use_lib):
    path = str(tmp_path / "x.safetensors")
    st.save(sample(), path, {"format": "pt"})
    back = st.load(path, use_lib=use_lib)
    assert set(back) == set(sample())
    for k, v in sample().items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k


def test_header_layout(tmp_path):
    path = str(tmp_path / "x.safetensors")
    st.save(sample(), path)
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0  # padded with spaces, as the spec asks
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"] == {"format": "pt"}
    assert header["b.bf16"] == {"dtype": "BF16", "shape": [4, 2], "data_offsets": header["b.bf16"]["data_offsets"]}
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(raw) == 8 + n + end
    a = header["a.weight"]["data_offsets"]
    assert raw[8 + n + a[0] : 8 + n + a[1]] == sample()["a.weight"].numpy().tobytes()


def test_same_tensors_same_bytes(tmp_path):
    st.save(sample(), str(tmp_path / "1"))
    st.save(dict(reversed(list(sample().items()))), str(tmp_path / "2"))
    assert open(tmp_path / "1", "rb").read() == open(tmp_path / "2", "rb").read()


def test_official_package_reads_ours(tmp_path):
    lib = pytest.importorskip("safetensors.torch")
    path = str(tmp_path / "x.safetensors")
    st.save(sample(), path)
    back = lib.load_file(path)
    assert all(torch.equal(back[k], v) for k, v in sample().items())


def test_writes_in_chunks_that_split_elements(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "WRITE_CHUNK", 7)  # boundaries fall inside elements and tensors
    path = str(tmp_path / "x.safetensors")
    st.save(sample(), path)
    back = st.load(path, use_lib=False)
    assert all(torch.equal(back[k], v) for k, v in sample().items())


def test_tensor_over_2_gib(tmp_path):
    """A full fine-tune of a 152k-vocab model in float32 has a 2.2 GB embedding: the old writer
    raised at 2 GiB and wrote 4 GiB+ tensors short while the header promised every byte."""
    t = torch.zeros(2**29 + 4, dtype=torch.float32)  # 2 GiB + 16 bytes
    t[-4:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    path = str(tmp_path / "big.safetensors")
    st.save({"w": t}, path)
    header, start = st._header_and_start(path)
    assert header["w"]["data_offsets"] == [0, t.numel() * 4]
    with open(path, "rb") as f:
        f.seek(0, 2)
        assert f.tell() == start + t.numel() * 4
        f.seek(-16, 2)
        assert struct.unpack("<4f", f.read(16)) == (1.0, 2.0, 3.0, 4.0)
