"""MovieLens loaders (three layouts) and the leave-last-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.datasets import Interactions, leave_last_out, load_movielens
from tests.paths import require_ml100k

GENRES = "unknown|0\nAction|1\nComedy|2\n"


def _write_100k(root: Path) -> Path:
    # Rows out of time order; user 2 has two events at ts 5 (file order: 12 then 11).
    (root / "u.data").write_text(
        "2\t12\t4\t5\n1\t10\t3\t9\n2\t11\t5\t5\n1\t11\t1\t3\n2\t10\t2\t1\n10\t12\t5\t7\n"
    )
    (root / "u.item").write_bytes(
        "10|Alpha (1990)|01-Jan-1990||http://x|0|1|0\n"
        "11|Bêta (1991)|01-Jan-1991||http://x|0|0|1\n"
        "12|Gamma (1992)|01-Jan-1992||http://x|0|1|1\n"
        "13|Never Rated (1993)|01-Jan-1993||http://x|1|0|0\n".encode("latin-1")
    )
    (root / "u.genre").write_text(GENRES)
    return root


def _write_1m(root: Path) -> Path:
    (root / "ratings.dat").write_text("1::10::3::9\n1::11::1::3\n2::12::4::5\n2::11::5::5\n")
    (root / "movies.dat").write_bytes(
        "10::Alpha (1990)::Action\n11::Bêta (1991)::Comedy|Drama\n12::Gamma (1992)::Action\n"
        "13::Never Rated (1993)::Drama\n".encode("latin-1")
    )
    return root


def _write_csv(root: Path) -> Path:
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,3.5,9\n1,11,1.0,3\n2,12,4.5,5\n2,11,5.0,5\n"
    )
    (root / "movies.csv").write_text(
        'movieId,title,genres\n10,"Alpha, The (1990)",Action\n11,Bêta (1991)|x,Comedy|Drama\n'
        "12,Gamma (1992),(no genres listed)\n13,Never Rated (1993),Drama\n",
        encoding="utf-8",
    )
    return root


def test_ml100k_layout(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path))
    assert log.user_ids == ["1", "2", "10"]  # numeric order, not string order
    assert log.item_ids == ["10", "11", "12", "13"]
    assert log.n_items == 4 and log.n_users == 3 and log.n_rows == 6
    assert log.titles[1] == "Bêta (1991)"
    assert log.genres[2] == ("Action", "Comedy") and log.genres[3] == ("unknown",)
    seqs = log.sequences()
    assert [log.item_ids[i] for i in seqs[0]] == ["11", "10"]  # sorted by time
    # Ties in time keep file order: 12 came before 11 in the file.
    assert [log.item_ids[i] for i in seqs[1]] == ["10", "12", "11"]
    assert log.sequence_ts()[1].tolist() == [1.0, 5.0, 5.0]
    assert log.ratings.dtype == np.float32 and log.sequence_ratings()[1].tolist() == [2, 4, 5]
    assert log.users.dtype == np.int64 and log.items.dtype == np.int64
    assert log.ts.dtype == np.float64


def test_1m_layout(tmp_path: Path) -> None:
    log = load_movielens(_write_1m(tmp_path))
    assert log.n_items == 4 and log.n_users == 2
    assert log.titles[1] == "Bêta (1991)"  # latin-1 decoded
    assert log.genres[1] == ("Comedy", "Drama")
    assert [log.item_ids[i] for i in log.sequences()[1]] == ["12", "11"]


def test_csv_layout(tmp_path: Path) -> None:
    log = load_movielens(_write_csv(tmp_path))
    assert log.titles[0] == "Alpha, The (1990)"
    assert log.titles[1] == "Bêta (1991)|x"
    assert log.genres[2] == ()
    assert log.ratings.tolist() == [1.0, 3.5, 4.5, 5.0]


def test_rated_items_missing_from_catalogue_are_appended(tmp_path: Path) -> None:
    _write_1m(tmp_path)
    (tmp_path / "ratings.dat").write_text("1::10::3::9\n1::99::1::3\n1::11::1::4\n")
    log = load_movielens(tmp_path)
    assert log.item_ids == ["10", "11", "12", "13", "99"] and log.titles[4] == ""


def test_max_users_keeps_first_ids(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path), max_users=2)
    assert log.user_ids == ["1", "2"] and log.n_rows == 5 and log.n_items == 4


def test_unknown_layout_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1::1::1\n")  # movies.dat missing
    with pytest.raises(ValueError, match=r"u\.data\+u\.item.*ratings\.dat\+movies\.dat"):
        load_movielens(tmp_path)


def test_leave_last_out(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path))
    split = leave_last_out(log)
    ids = np.array(log.item_ids)
    # user "2": 10@1, 12@5, 11@5 (file order) -> valid 12, test 11.
    assert ids[split.train[1]].tolist() == ["10"]
    assert ids[split.valid[1]] == "12" and ids[split.test[1]] == "11"
    assert split.valid_ts[1] == 5.0 and split.test_ts[1] == 5.0
    assert split.train_ts[1].tolist() == [1.0]
    # users with < 3 events keep them all in train and have no targets
    assert split.valid[0] == -1 and split.test[0] == -1 and len(split.train[0]) == 2
    assert split.eval_users().tolist() == [1]
    assert ids[split.history(1, "test")].tolist() == ["10", "12"]
    assert split.n_items == 4


def test_ml100k_real() -> None:
    log = load_movielens(require_ml100k())
    assert (log.n_users, log.n_items, log.n_rows) == (943, 1682, 100_000)
    assert log.titles[0] == "Toy Story (1995)"
    assert log.genres[0] == ("Animation", "Children's", "Comedy")
    # Rows sorted by user, then time.
    assert np.all(np.diff(log.users) >= 0)
    same = log.users[1:] == log.users[:-1]
    assert np.all(np.diff(log.ts)[same] >= 0)
    split = leave_last_out(log)
    assert len(split.eval_users()) == 943
    assert sum(len(t) for t in split.train) == 100_000 - 2 * 943
    seqs = log.sequences()
    assert all(seqs[u][-1] == split.test[u] and seqs[u][-2] == split.valid[u] for u in range(943))


def test_interactions_is_frozen() -> None:
    log = Interactions(
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.float32),
        [], [], [], [],
    )  # fmt: skip
    with pytest.raises(AttributeError):
        log.users = np.zeros(1)  # type: ignore[misc]
    assert log.sequences() == []
