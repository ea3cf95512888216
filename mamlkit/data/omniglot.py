"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): download and verify the official zips, read
the PNGs with Pillow, and cache all 1623 × 20 drawings as one 28×28 array file.

Introduced in notebook 08_characters.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
ARCHIVES = {  # name -> md5 of the official file
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
CACHE_NAME = "omniglot-28x28.npz"
SIZE = 28
REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "omniglot"


class OmniglotError(RuntimeError):
    """Omniglot could not be found, downloaded or verified; the message says what to do."""


@dataclass(frozen=True)
class Omniglot:
    """All drawings, ``images[c, d]`` is drawing ``d`` of character ``c`` (uint8, 255 = ink)."""

    images: np.ndarray  # (1623, 20, 28, 28) uint8
    alphabets: np.ndarray  # (1623,) str, e.g. "Latin"
    characters: np.ndarray  # (1623,) str, e.g. "images_background/Latin/character01"

    def __len__(self) -> int:
        return len(self.images)


def default_data_dir() -> Path:
    """``$MAMLKIT_DATA/omniglot`` if set, else ``data/omniglot`` in the project."""
    env = os.environ.get("MAMLKIT_DATA")
    return Path(env) / "omniglot" if env else REPO_DATA


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _missing_message(data_dir: Path) -> str:
    urls = "\n".join(f"  {BASE_URL}{name}.zip  (md5 {md5})" for name, md5 in ARCHIVES.items())
    return (f"Omniglot is not in {data_dir} and could not be downloaded. Download these two files:\n{urls}\n"
            f"and put them (or their extracted folders images_background/ and images_evaluation/) in "
            f"{data_dir}, or point MAMLKIT_DATA / data_dir= at a folder that holds them.")


def download(name: str, data_dir: Path, base_url: str = BASE_URL, md5: str | None = None) -> Path:
    """Download ``name``.zip into ``data_dir``, check its md5, keep it only if it matches."""
    url, target = f"{base_url}{name}.zip", data_dir / f"{name}.zip"
    md5 = md5 or ARCHIVES[name]
    try:
        atomic_write(target, lambda tmp: _fetch(url, tmp))
    except OSError as e:
        raise OmniglotError(f"downloading {url} failed ({e}).\n" + _missing_message(data_dir)) from e
    if md5sum(target) != md5:
        target.unlink()
        raise OmniglotError(f"{url} downloaded, but its md5 is not {md5}: the file was corrupt or truncated and "
                            "has been removed. Try again, or download it by hand (see the README).")
    return target


def _fetch(url: str, path: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f)


def _find_source(name: str, folders: list[Path]):
    """An extracted folder or a zip holding ``name`` in one of ``folders``, else None."""
    for folder in folders:
        if (folder / name).is_dir():
            return folder / name
        if (folder / f"{name}.zip").is_file():
            return folder / f"{name}.zip"
    return None


def _read_pngs(source: Path, name: str):
    """Yield (relative path, PNG bytes) in sorted order, from a zip or a folder."""
    if source.is_dir():
        for path in sorted(source.rglob("*.png")):
            yield f"{name}/{path.relative_to(source).as_posix()}", path.read_bytes()
        return
    try:
        with zipfile.ZipFile(source) as z:
            for entry in sorted(n for n in z.namelist() if n.endswith(".png")):
                yield entry, z.read(entry)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise OmniglotError(f"{source} is not a readable zip ({e}): it is corrupt or truncated; delete it and "
                            "download it again") from e


def _to_28(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        return 255 - np.asarray(im, dtype=np.uint8)  # ink = 255


def decode(sources: dict) -> tuple:
    """(images, alphabets, characters) from the zips or folders in ``sources`` (sorted class order)."""
    drawings: dict[str, list] = {}
    for name, source in sources.items():
        for entry, png in _read_pngs(source, name):
            character = entry.rsplit("/", 1)[0]
            try:
                drawing = _to_28(png)
            except Exception as e:  # Pillow raises several types for bytes that are not an image
                raise OmniglotError(f"{source}: the entry {entry} is not a readable PNG ({type(e).__name__}): the "
                                    "copy is damaged; replace it with the official file (see the README)") from e
            drawings.setdefault(character, []).append(drawing)
    if not drawings:
        raise OmniglotError(f"no PNG drawings found in {list(sources.values())}")
    characters = sorted(drawings)
    counts = {len(drawings[c]) for c in characters}
    if len(counts) != 1:
        raise OmniglotError(f"characters have different numbers of drawings {sorted(counts)}: the copy is incomplete")
    images = np.stack([np.stack(drawings[c]) for c in characters])
    alphabets = np.array([c.split("/")[1] for c in characters])
    return images, alphabets, np.array(characters)


def writable(folder: Path) -> bool:
    """Whether this user can create files in ``folder`` (or create it): ``os.access`` on the folder or
    its nearest existing parent, and, so that even root keeps off read-only copies, a write bit set."""
    folder = Path(folder).absolute()
    while not folder.exists():
        if folder == folder.parent:
            return False
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) and bool(folder.stat().st_mode & 0o222)


def user_cache(data_dir: Path) -> Path:
    """The cache of ``data_dir`` in ``$XDG_CACHE_HOME/mamlkit`` (default ``~/.cache/mamlkit``)."""
    key = hashlib.md5(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mamlkit" / f"omniglot-{key}-{CACHE_NAME}"


def cache_path(data_dir: Path) -> Path | None:
    """Where the 28×28 cache of ``data_dir`` is read or written: an existing one inside it or in the user
    cache; else inside it if this user can write there, else the user cache if that is writable; ``None``
    (keep it in memory) if neither is."""
    local, user = Path(data_dir) / CACHE_NAME, user_cache(data_dir)
    for cache in (local, user):
        if cache.is_file():
            return cache
    for cache in (local, user):
        if writable(cache.parent):
            return cache
    return None


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def load_omniglot(data_dir=None, download_missing: bool = True, base_url: str = BASE_URL) -> Omniglot:
    """Omniglot at 28×28, from the cache if present (about a second), else built from the zips or
    extracted folders in ``data_dir`` (a local copy is used as it is; missing files are downloaded
    and md5-checked). The cache goes in ``data_dir``, or in ~/.cache/mamlkit if that is read-only.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache = cache_path(data_dir)
    if cache is None or not cache.is_file():
        sources = {}
        for name in ARCHIVES:
            found = _find_source(name, [data_dir])
            if found is None and download_missing:
                found = _download_into(name, data_dir, base_url)
            if found is None:
                raise OmniglotError(_missing_message(data_dir))
            sources[name] = found
        images, alphabets, characters = decode(sources)
        if cache is not None:
            try:
                atomic_write(cache, lambda tmp: _save(tmp, images, alphabets, characters))
                if cache.parent != data_dir:
                    _note(f"{data_dir} is not writable by this user: the 28x28 cache is in {cache}")
            except OSError as e:
                _note(f"could not write the 28x28 cache {cache} ({e.strerror}): kept in memory for this run only")
        else:
            _note(f"neither {data_dir} nor {user_cache(data_dir).parent} is writable: the 28x28 Omniglot images are "
                  "kept in memory for this run only (set XDG_CACHE_HOME to a writable folder to cache them)")
        return Omniglot(images, alphabets, characters)
    try:
        with np.load(cache) as z:
            return Omniglot(z["images"], z["alphabets"], z["characters"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise OmniglotError(f"the cache {cache} is unreadable ({e}); delete it and it will be rebuilt") from e


def _save(tmp, images, alphabets, characters) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, images=images, alphabets=alphabets, characters=characters)


def _download_into(name: str, data_dir: Path, base_url: str) -> Path:
    """``download``, refused up front where this user cannot write, and leaving no empty folders behind
    when it fails."""
    if not writable(data_dir):
        raise OmniglotError(f"Omniglot is not in {data_dir}, and this user cannot write there to download it: "
                            "point --data-dir (or MAMLKIT_DATA) at a folder holding images_background.zip and "
                            "images_evaluation.zip, or at a writable folder to download into")
    created = []
    folder = data_dir.absolute()
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        return download(name, data_dir, base_url)
    except BaseException:
        for folder in created:  # innermost first; only the empty folders this download made
            try:
                folder.rmdir()
            except OSError:
                break
        raise


# Vinyals et al. (2016) split as used by torchmeta: the last 423 characters in sorted order are the
# test set; these five background alphabets (172 characters) the validation set; the rest (1028) train.
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
SPLITS = ("maml", "vinyals")


def split_classes(data: Omniglot, split: str = "maml", seed: int = 1) -> dict[str, np.ndarray]:
    """Character indices for meta-train / meta-val / meta-test.

    ``maml``: a seeded shuffle of all 1623 characters, 1100 / 100 / 423 (as the MAML code);
    ``vinyals``: 1028 / 172 / 423 by alphabet (see ``VINYALS_VAL_ALPHABETS``).
    """
    n = len(data)
    if split == "maml":
        order = np.random.RandomState(seed).permutation(n)
        return {"train": np.sort(order[:1100]), "val": np.sort(order[1100:1200]), "test": np.sort(order[1200:])}
    if split == "vinyals":
        index = np.arange(n)
        test = index[n - 423:]
        val = index[: n - 423][np.isin(data.alphabets[: n - 423], VINYALS_VAL_ALPHABETS)]
        train = np.setdiff1d(index[: n - 423], val)
        return {"train": train, "val": val, "test": test}
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
