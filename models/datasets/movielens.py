"""Loaders of the MovieLens layouts into an `Interactions` log.

Three layouts are recognised from the files in a folder, with no code change:

* ML-100K: ``u.data`` (tab: user item rating ts) and ``u.item`` (pipe,
  latin-1: id|title|release|video|url|19 genre flags), genre names from
  ``u.genre`` when present;
* ML-1M / ML-10M: ``ratings.dat`` (``user::item::rating::ts``) and
  ``movies.dat`` (``item::title::Genre|Genre``);
* ML-latest / 20M / 25M / 32M: ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``) and ``movies.csv`` (header
  ``movieId,title,genres``, quoted titles).

Every catalogue item gets a dense index, rated or not, in the order of the
movies file; rated items missing from it are appended with an empty title.
Users get dense indices in the order of their original ids (numeric when all
ids are numbers).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from models.datasets.interactions import Interactions

#: Genre names of ML-100K in flag order, used when ``u.genre`` is absent.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_LAYOUTS = (
    ("ml-100k", "u.data", "u.item"),
    ("ml-1m", "ratings.dat", "movies.dat"),
    ("ml-latest", "ratings.csv", "movies.csv"),
)


def detect_layout(path: str | Path) -> tuple[str, Path, Path]:
    """The layout name and its ratings and movies files; ValueError if none fits."""
    root = Path(path)
    for name, ratings, movies in _LAYOUTS:
        if (root / ratings).is_file() and (root / movies).is_file():
            return name, root / ratings, root / movies
    looked = ", ".join(f"{r}+{m}" for _, r, m in _LAYOUTS)
    raise ValueError(f"no MovieLens layout in {root}: looked for {looked}")


def load_movielens(path: str | Path, max_users: int | None = None) -> Interactions:
    """Load a MovieLens folder of any of the three layouts (see module docs).

    ``max_users`` keeps the first N users in original id order (CI slices);
    the catalogue stays whole.
    """
    layout, ratings_file, movies_file = detect_layout(path)
    if layout == "ml-100k":
        raw = _read_table(ratings_file.read_bytes(), b"\t", header=False)
        catalogue = _read_ml100k_items(movies_file, Path(path) / "u.genre")
    elif layout == "ml-1m":
        raw = _read_table(ratings_file.read_bytes().replace(b"::", b"\t"), b"\t", header=False)
        catalogue = _read_dat_items(movies_file)
    else:
        raw = _read_table(ratings_file.read_bytes(), b",", header=True)
        catalogue = _read_csv_items(movies_file)
    return _build(raw, catalogue, max_users)


def _read_table(data: bytes, sep: bytes, header: bool) -> np.ndarray:
    """A [rows, 4] float64 table of user, item, rating, ts (ids are integers)."""
    if not data.strip():
        return np.zeros((0, 4))
    table = np.loadtxt(
        io.BytesIO(data),
        delimiter=sep.decode(),
        skiprows=1 if header else 0,
        usecols=(0, 1, 2, 3),
        dtype=np.float64,
        ndmin=2,
    )
    return table


_Catalogue = list[tuple[str, str, tuple[str, ...]]]  # item id, title, genres


def _decode(data: bytes) -> str:
    # ML-1M is latin-1, ML-10M and the csv layouts are UTF-8.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_ml100k_items(path: Path, genre_file: Path) -> _Catalogue:
    names: tuple[str, ...] = ML100K_GENRES
    if genre_file.is_file():
        pairs = [
            line.rsplit("|", 1)
            for line in genre_file.read_text(encoding="latin-1").splitlines()
            if "|" in line
        ]
        names = tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))
    out: _Catalogue = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        flags = fields[5:]
        genres = tuple(n for n, f in zip(names, flags, strict=False) if f.strip() == "1")
        out.append((fields[0].strip(), fields[1].strip(), genres))
    return out


def _split_genres(text: str) -> tuple[str, ...]:
    return tuple(g for g in text.strip().split("|") if g and g != "(no genres listed)")


def _read_dat_items(path: Path) -> _Catalogue:
    out: _Catalogue = []
    for line in _decode(path.read_bytes()).splitlines():
        if not line.strip():
            continue
        item, title, genres = [*line.split("::"), "", ""][:3]
        out.append((item.strip(), title.strip(), _split_genres(genres)))
    return out


def _read_csv_items(path: Path) -> _Catalogue:
    rows = csv.reader(io.StringIO(_decode(path.read_bytes())))
    next(rows, None)  # header
    return [
        (r[0].strip(), r[1].strip(), _split_genres(r[2] if len(r) > 2 else "")) for r in rows if r
    ]


def _id_str(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    ids = list(ids)
    if all(i.lstrip("-").isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def _build(raw: np.ndarray, catalogue: _Catalogue, max_users: int | None) -> Interactions:
    raw_users = raw[:, 0].astype(np.int64)
    uniq_users = np.unique(raw_users)  # numeric order of the original ids
    if max_users is not None:
        uniq_users = uniq_users[:max_users]
        keep = np.isin(raw_users, uniq_users)
        raw, raw_users = raw[keep], raw_users[keep]
    users = np.searchsorted(uniq_users, raw_users).astype(np.int64)

    item_ids = [item for item, _, _ in catalogue]
    titles = [title for _, title, _ in catalogue]
    genres = [g for _, _, g in catalogue]
    index = {item: i for i, item in enumerate(item_ids)}
    # Map the distinct raw ids only (millions of rows, tens of thousands of items).
    uniq_items, inverse = np.unique(raw[:, 1], return_inverse=True)
    uniq_names = [_id_str(x) for x in uniq_items]
    for item in _sorted_ids({i for i in uniq_names if i not in index}):
        index[item] = len(item_ids)
        item_ids.append(item)
        titles.append("")
        genres.append(())
    dense = np.array([index[i] for i in uniq_names], dtype=np.int64)
    items = dense[inverse.reshape(-1)]

    ts = raw[:, 3].astype(np.float64)
    order = np.lexsort((np.arange(len(users)), ts, users))
    return Interactions(
        users=users[order],
        items=items[order],
        ts=ts[order],
        ratings=raw[:, 2].astype(np.float32)[order],
        user_ids=[str(u) for u in uniq_users.tolist()],
        item_ids=item_ids,
        titles=titles,
        genres=genres,
    )
