"""LocalArtifactStore: atomic writes with sha256, verification, and path safety against traversal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelbuilder.artifacts import LocalArtifactStore, check_artifact_name, open_artifact_store
from modelbuilder.entities import Artifact
from modelbuilder.errors import ArtifactNotFoundError, InvalidParameterError

RUN = "0123456789abcdef0123456789abcdef"

TRAVERSALS = [
    "..",
    "../secret.txt",
    "../../etc/passwd",
    "a/../../secret.txt",
    "a/b/../../../secret.txt",
    "a/..",
    "./secret.txt",
    "a/./b",
    "/etc/passwd",
    "//etc/passwd",
    "/",
    "",
    "a//b",
    "a/",
    "..\\secret.txt",
    "a\\..\\..\\secret.txt",
    "\\\\server\\share\\x",
    "C:\\Windows\\win.ini",
    "C:/Windows/win.ini",
    "c:secret.txt",
    "secret.txt\x00.png",
    "\x00",
    "%2e%2e/secret.txt",
    "%2e%2e%2fsecret.txt",
    "..%2fsecret.txt",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "%252e%252e%252fsecret.txt",
    "..%5csecret.txt",
    "%2fetc%2fpasswd",
    "a%00b",
    "\uff0e\uff0e/secret.txt",
    "\u2024\u2024/secret.txt",
    "~/secret.txt",
    "~root/.ssh/id_rsa",
    "file:///etc/passwd",
    "secret\n.txt",
    "a\r\n../b",
    "x" * 1025,
    "a/" + "y" * 256,
]


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts" / "secret.txt"  # next to the run folders, outside any of them
    path.parent.mkdir(parents=True)
    path.write_text("top secret")
    return path


def test_enough_traversal_attempts() -> None:
    assert len(TRAVERSALS) >= 30 and len(set(TRAVERSALS)) == len(TRAVERSALS)


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_names_are_refused_everywhere(
    artifacts: LocalArtifactStore, secret: Path, name: str
) -> None:
    artifacts.put_bytes(RUN, b"fine", "fine.txt")
    before = sorted(p for p in artifacts.root.rglob("*"))
    with pytest.raises(InvalidParameterError) as info:
        artifacts.resolve(RUN, name)
    assert info.value.hint
    for call in (
        lambda: artifacts.read(RUN, name),
        lambda: artifacts.describe(RUN, name),
        lambda: artifacts.put_bytes(RUN, b"pwned", name),
        lambda: artifacts.download(RUN, artifacts.root.parent / "out", [name]),
    ):
        with pytest.raises(InvalidParameterError):
            call()
    assert sorted(p for p in artifacts.root.rglob("*")) == before
    assert secret.read_text() == "top secret"


@pytest.mark.parametrize("run_id", ["..", "../x", "a/b", "", ".hidden", "r" * 65, "run id", None])
def test_bad_run_ids_are_refused(artifacts: LocalArtifactStore, run_id: object) -> None:
    with pytest.raises(InvalidParameterError):
        artifacts.run_dir(run_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        artifacts.put_bytes(run_id, b"x", "a.txt")  # type: ignore[arg-type]


def test_names_that_are_safe(artifacts: LocalArtifactStore) -> None:
    for name in [
        "a.txt",
        "outputs/bestModel.onnx",
        "..hidden-but-fine",
        "a..b/c",
        "%41.txt",
        "ü/ñ.txt",
        "....",
    ]:
        assert check_artifact_name(name) == name
        artifacts.put_bytes(RUN, name.encode(), name)
        assert artifacts.read(RUN, name) == name.encode()


def test_symlinks_out_of_the_run_folder_are_refused(
    artifacts: LocalArtifactStore, secret: Path, tmp_path: Path
) -> None:
    run_dir = artifacts.run_dir(RUN)
    run_dir.mkdir(parents=True)
    (run_dir / "link.txt").symlink_to(secret)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("outside")
    (run_dir / "linked-dir").symlink_to(outside, target_is_directory=True)
    for name in ("link.txt", "linked-dir/data.txt"):
        with pytest.raises(ArtifactNotFoundError, match="outside"):
            artifacts.resolve(RUN, name)
        with pytest.raises(ArtifactNotFoundError):
            artifacts.read(RUN, name)
    with pytest.raises(InvalidParameterError, match="symbolic link"):
        artifacts.put_bytes(RUN, b"pwned", "linked-dir/new/evil.txt")
    assert sorted(p.name for p in outside.iterdir()) == ["data.txt"]  # no folder was created outside
    assert artifacts.list_files(RUN) == []  # links are not listed
    (run_dir / "inner.txt").write_text("inner")
    (run_dir / "inner-link.txt").symlink_to(run_dir / "inner.txt")
    assert artifacts.read(RUN, "inner-link.txt") == b"inner"  # a link that stays inside is fine


def test_a_run_folder_that_is_a_symlink_is_refused(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes(b"x")
    artifacts.root.mkdir(parents=True)
    artifacts.run_dir(RUN).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ArtifactNotFoundError):
        artifacts.resolve(RUN, "model.onnx")
    with pytest.raises(InvalidParameterError):
        artifacts.put_bytes(RUN, b"y", "model.onnx")
    assert artifacts.delete_run(RUN) and elsewhere.is_dir() and (elsewhere / "model.onnx").exists()


def test_put_file_and_bytes_record_size_and_sha256(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "bestModel.onnx"
    data = os.urandom(3 * (1 << 20) + 17)  # several copy chunks
    source.write_bytes(data)
    record = artifacts.put_file(RUN, source, "outputs/bestModel.onnx")
    assert record == Artifact("outputs/bestModel.onnx", len(data), hashlib.sha256(data).hexdigest())
    assert artifacts.put_file(RUN, source).path == "bestModel.onnx"
    small = artifacts.put_bytes(RUN, b'["a", "b"]', "bestModelMap.json")
    assert small == Artifact("bestModelMap.json", 10, hashlib.sha256(b'["a", "b"]').hexdigest())
    assert artifacts.describe(RUN, "outputs/bestModel.onnx") == record
    assert artifacts.resolve(RUN, "outputs/bestModel.onnx").read_bytes() == data
    with artifacts.open(RUN, "bestModelMap.json") as handle:
        assert handle.read() == b'["a", "b"]'
    assert artifacts.list_files(RUN) == ["bestModel.onnx", "bestModelMap.json", "outputs/bestModel.onnx"]
    assert artifacts.list_files("f" * 32) == []


def test_a_failed_write_leaves_nothing_behind(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file"
    folder.mkdir()
    with pytest.raises(OSError):
        artifacts.put_file(RUN, folder, "model.onnx")
    with pytest.raises(FileNotFoundError):
        artifacts.put_file(RUN, tmp_path / "missing.onnx", "model.onnx")
    assert list(artifacts.run_dir(RUN).rglob("*")) == []
    with pytest.raises(ArtifactNotFoundError, match="no artifact 'model.onnx'"):
        artifacts.read(RUN, "model.onnx")


def test_rewrites_replace_atomically_and_temp_files_are_not_listed(artifacts: LocalArtifactStore) -> None:
    artifacts.put_bytes(RUN, b"v1", "log.txt")
    artifacts.put_bytes(RUN, b"v2", "log.txt")
    (artifacts.run_dir(RUN) / ".log.txt.abc123.tmp").write_bytes(b"half")  # a write in progress
    assert artifacts.read(RUN, "log.txt") == b"v2" and artifacts.list_files(RUN) == ["log.txt"]


def test_verify_detects_tampering_and_loss(artifacts: LocalArtifactStore) -> None:
    records = [
        artifacts.put_bytes(RUN, b"model", "bestModel.onnx"),
        artifacts.put_bytes(RUN, b"[]", "map.json"),
    ]
    assert artifacts.verify(RUN, records) and artifacts.find_mismatches(RUN, records) == []
    artifacts.resolve(RUN, "bestModel.onnx").write_bytes(b"MODEL")  # same size, other content
    assert not artifacts.verify(RUN, records)
    assert artifacts.find_mismatches(RUN, records) == ["bestModel.onnx"]
    artifacts.resolve(RUN, "map.json").unlink()
    assert artifacts.find_mismatches(RUN, records) == ["bestModel.onnx", "map.json"]
    assert not artifacts.verify(RUN, [Artifact("../escape", 1, "a" * 64)])


def test_download_and_delete(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    artifacts.put_bytes(RUN, b"m", "outputs/bestModel.onnx")
    artifacts.put_bytes(RUN, b"e", "evaluation.json")
    written = artifacts.download(RUN, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "evaluation.json",
        "outputs/bestModel.onnx",
    ]
    assert (tmp_path / "out" / "outputs" / "bestModel.onnx").read_bytes() == b"m"
    with pytest.raises(ArtifactNotFoundError):
        artifacts.download(RUN, tmp_path / "out2", ["missing.txt"])
    assert artifacts.delete_run(RUN) is True and not artifacts.run_dir(RUN).exists()
    assert artifacts.delete_run(RUN) is False


def test_open_artifact_store(tmp_path: Path) -> None:
    assert open_artifact_store(tmp_path / "a").root == (tmp_path / "a").absolute()
    assert open_artifact_store(f"file://{tmp_path}/b").root == (tmp_path / "b").absolute()
    with pytest.raises(InvalidParameterError, match="s3"):
        open_artifact_store("s3://bucket/artifacts")
