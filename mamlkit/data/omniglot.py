"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015): download and verify the official zips, read
the PNGs with Pillow, and cache all 1623 × 20 drawings as one 28×28 array file.

Introduced in notebook 08_characters.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
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


def build_cache(sources: dict, cache: Path) -> None:
    """Decode every drawing (sorted class order), resize to 28×28 and write ``cache`` atomically."""
    drawings: dict[str, list] = {}
    for name, source in sources.items():
        for entry, png in _read_pngs(source, name):
            character = entry.rsplit("/", 1)[0]
            drawings.setdefault(character, []).append(_to_28(png))
    if not drawings:
        raise OmniglotError(f"no PNG drawings found in {list(sources.values())}")
    characters = sorted(drawings)
    counts = {len(drawings[c]) for c in characters}
    if len(counts) != 1:
        raise OmniglotError(f"characters have different numbers of drawings {sorted(counts)}: the copy is incomplete")
    images = np.stack([np.stack(drawings[c]) for c in characters])
    alphabets = np.array([c.split("/")[1] for c in characters])

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, alphabets=alphabets, characters=np.array(characters))

    atomic_write(cache, write)


def cache_path(data_dir: Path) -> Path:
    """Where the 28×28 cache of ``data_dir`` lives: inside it, or in ~/.cache if it is read-only."""
    if not data_dir.exists() or data_dir.stat().st_mode & 0o222:  # mode bits: even root keeps off read-only copies
        return data_dir / CACHE_NAME
    key = hashlib.md5(str(data_dir.resolve()).encode()).hexdigest()[:10]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mamlkit" / f"omniglot-{key}-{CACHE_NAME}"


def load_omniglot(data_dir=None, download_missing: bool = True, base_url: str = BASE_URL) -> Omniglot:
    """Omniglot at 28×28, from the cache if present (about a second), else built from the zips or
    extracted folders in ``data_dir`` (a local copy is used as it is; missing files are downloaded
    and md5-checked). The cache goes in ``data_dir``, or in ~/.cache/mamlkit if that is read-only.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    cache = cache_path(data_dir)
    if not cache.is_file():
        sources = {}
        for name in ARCHIVES:
            found = _find_source(name, [data_dir])
            if found is None and download_missing:
                found = download(name, data_dir, base_url)
            if found is None:
                raise OmniglotError(_missing_message(data_dir))
            sources[name] = found
        build_cache(sources, cache)
    try:
        with np.load(cache) as z:
            return Omniglot(z["images"], z["alphabets"], z["characters"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise OmniglotError(f"the cache {cache} is unreadable ({e}); delete it and it will be rebuilt") from e


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
