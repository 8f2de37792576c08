"""Flavor detection in the control plane: from bytes only, refusing anything malformed."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import pytest

from konan.core.errors import InvalidInput
from konan.registry.flavors import check_declared, detect_flavor, pickle_globals
from konan.serving.flavors.archive import ArchiveLimits
from tests.serving import model_builders as mb


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One artifact per flavor, each under a misleading file name."""
    d = tmp_path_factory.mktemp("artifacts")
    model = mb.logistic()
    joblib.dump(model, d / "plain-joblib.onnx")
    joblib.dump(model, d / "zlib-joblib.skops", compress=("zlib", 3))
    joblib.dump(model, d / "gzip-joblib.zip", compress=("gzip", 3))
    joblib.dump(model, d / "xz-joblib.pkl", compress=("xz", 3))
    (d / "model.pkl.onnx").write_bytes(pickle.dumps(model, protocol=5))
    (d / "custom.skops").write_bytes(mb.custom_bundle())
    return {
        "sklearn": mb.write_skops(model, d / "model.joblib"),
        "onnx": mb.write_onnx(model, d / "model.pkl"),
        "onnx-pipeline": mb.write_onnx(mb.churn_pipeline(), d / "pipeline.zip"),
        "python": d / "custom.skops",
        "pickle": d / "model.pkl.onnx",
        "joblib": d / "plain-joblib.onnx",
        "joblib-zlib": d / "zlib-joblib.skops",
        "joblib-gzip": d / "gzip-joblib.zip",
        "joblib-xz": d / "xz-joblib.pkl",
    }


@pytest.mark.parametrize(
    ("key", "flavor"),
    [
        ("sklearn", "sklearn"),
        ("onnx", "onnx"),
        ("onnx-pipeline", "onnx"),
        ("python", "python"),
        ("pickle", "pickle"),
        ("joblib", "joblib"),
        ("joblib-zlib", "joblib"),
        ("joblib-gzip", "joblib"),
        ("joblib-xz", "joblib"),
    ],
)
def test_flavor_is_read_from_the_bytes_not_the_file_name(
    artifacts: dict[str, Path], key: str, flavor: str
) -> None:
    assert detect_flavor(artifacts[key]) == flavor


def test_detection_never_imports_a_model_runtime(artifacts: dict[str, Path]) -> None:
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from konan.registry.flavors import detect_flavor, pickle_globals\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    detect_flavor(Path(p)); pickle_globals(Path(p))\n"
        "heavy = ('skops', 'onnx', 'onnxruntime', 'sklearn', 'joblib', 'pandas', 'numpy')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    paths = json.dumps([str(p) for p in artifacts.values()])
    out = subprocess.run(
        [sys.executable, "-c", script, paths], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_declared_flavor_must_match_the_bytes() -> None:
    with pytest.raises(InvalidInput, match="declared sklearn but the file is a pickle"):
        check_declared("sklearn", "pickle")
    with pytest.raises(InvalidInput, match="declared onnx but the file is a skops"):
        check_declared("onnx", "sklearn")
    with pytest.raises(InvalidInput, match="declared pickle but the file is a joblib"):
        check_declared("pickle", "joblib")
    with pytest.raises(InvalidInput, match="unknown flavor 'xgboost'"):
        check_declared("xgboost", "pickle")


def test_declared_flavor_aliases_and_absence() -> None:
    assert check_declared("skops", "sklearn") == "sklearn"
    assert check_declared("SKLearn", "sklearn") == "sklearn"
    assert check_declared(None, "onnx") == "onnx"
    assert check_declared("joblib", "pickle") == "joblib"  # joblib loads plain pickles


def test_pickle_globals_name_what_a_load_would_import(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.bin"
    path.write_bytes(mb.marker_pickle(marker))
    assert detect_flavor(path) == "pickle"
    assert pickle_globals(path) == ["posix.system"]
    assert "sklearn.linear_model._logistic.LogisticRegression" in pickle_globals(
        artifacts["pickle"]
    )
    for key in ("joblib", "joblib-zlib", "joblib-xz"):
        names = pickle_globals(artifacts[key])
        assert names[0] == "sklearn.linear_model._logistic.LogisticRegression"
        assert "joblib.numpy_pickle.NumpyArrayWrapper" in names
    assert not marker.exists()


def test_text_global_opcodes_are_listed_too(tmp_path: Path) -> None:
    path = tmp_path / "old.bin"
    path.write_bytes(b"\x80\x02cbuiltins\nexec\nq\x00X\x05\x00\x00\x00printq\x01\x85q\x02Rq\x03.")
    assert pickle_globals(path) == ["builtins.exec"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"a,b,c\n1,2,3\n", "unrecognised artifact"),
        (b"PAR1\x00\x00\x00\x00", "Parquet"),
        (
            b"\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins",
            "truncated or corrupt pickle",
        ),
        (b"\x80\x01]q\x00.", "unsupported protocol 1"),
        (b"PK\x03\x04garbage", "corrupt or truncated zip"),
        (gzip.compress(b"not a pickle at all"), "not a pickle"),
    ],
)
def test_unusable_bytes_are_refused_with_a_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    with pytest.raises(InvalidInput, match=reason):
        detect_flavor(path)


@pytest.mark.parametrize("key", ["sklearn", "onnx", "python", "pickle", "joblib-zlib"])
def test_truncated_artifacts_are_refused(
    tmp_path: Path, artifacts: dict[str, Path], key: str
) -> None:
    data = artifacts[key].read_bytes()
    path = tmp_path / "truncated"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidInput, match=r"truncated|corrupt"):
        detect_flavor(path)


def test_a_torch_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(mb.zip_bytes({"archive/data.pkl": b"\x80\x02.", "archive/version": "3"}))
    with pytest.raises(InvalidInput, match="PyTorch checkpoint"):
        detect_flavor(path)


def test_a_zip_that_is_neither_skops_nor_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(mb.zip_bytes({"readme.txt": "hi"}))
    with pytest.raises(InvalidInput, match=r"without schema\.json"):
        detect_flavor(path)


def test_corrupt_skops_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.skops"
    path.write_bytes(mb.zip_bytes({"schema.json": "{not json"}))
    with pytest.raises(InvalidInput, match=r"schema\.json is not JSON"):
        detect_flavor(path)


# ---- zip safety ------------------------------------------------------------------------------


def _symlink_zip() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("konan-model.json", json.dumps({"entrypoint": "model:M"}))
        zf.writestr("model.py", "class M: pass\n")
        link = zipfile.ZipInfo("passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _bundle_with(name: str) -> bytes:
    return mb.zip_bytes(
        {
            "konan-model.json": json.dumps({"entrypoint": "model:M"}),
            "model.py": "class M: pass\n",
            name: b"x",
        }
    )


ZIP_ATTACKS = {
    "dot-dot": (_bundle_with("../../escaped.txt"), "outside the archive"),
    "absolute": (_bundle_with("/tmp/konan-absolute.txt"), "absolute path"),
    "drive": (_bundle_with("C:/evil.txt"), "absolute path"),
    "backslash": (_bundle_with("..\\evil.txt"), "backslash"),
    "symlink": (_symlink_zip(), "symbolic link"),
    "nested-zip": (_bundle_with("inner.zip"), "nested archives"),
    "nested-by-magic": (
        mb.zip_bytes(
            {
                "konan-model.json": json.dumps({"entrypoint": "model:M"}),
                "model.py": "class M: pass\n",
                "data.bin": mb.zip_bytes({"a": "b"}),
            }
        ),
        "nested archives",
    ),
    "bomb": (
        mb.zip_bytes(
            {
                "konan-model.json": json.dumps({"entrypoint": "model:M"}),
                "model.py": "class M: pass\n",
                "zeros.bin": bytes(64 * 1024 * 1024),
            }
        ),
        "compression ratio",
    ),
    "manifest-escape": (
        mb.zip_bytes(
            {
                "konan-model.json": json.dumps({"entrypoint": "model:M", "files": ["../w.pkl"]}),
                "model.py": "class M: pass\n",
            }
        ),
        "outside the bundle",
    ),
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_unsafe_zips_are_refused(tmp_path: Path, attack: str) -> None:
    data, reason = ZIP_ATTACKS[attack]
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    before = set(os.listdir(tmp_path.parent))
    with pytest.raises(InvalidInput, match=reason):
        detect_flavor(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.zip"]
    assert set(os.listdir(tmp_path.parent)) == before
    assert not Path("/tmp/konan-absolute.txt").exists()


def test_too_many_entries_and_too_many_bytes(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    entries: dict[str, bytes | str] = {f"f{i}.txt": "x" for i in range(50)}
    path.write_bytes(mb.zip_bytes({"konan-model.json": "{}", **entries}))
    with pytest.raises(InvalidInput, match="51 entries; the limit is 20"):
        detect_flavor(path, limits=ArchiveLimits(max_entries=20))
    with pytest.raises(InvalidInput, match="unpacks to more than 10 bytes"):
        detect_flavor(path, limits=ArchiveLimits(max_total_bytes=10))


def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("schema.json", "{}")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("schema.json", json.dumps({"__class__": "X", "protocol": 2}))
    with pytest.raises(InvalidInput, match="appears twice"):
        detect_flavor(path)
