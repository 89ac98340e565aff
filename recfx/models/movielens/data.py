"""MovieLens-100k as leave-last-out user sequences.

The ratings come from the copy of MovieLens-100k that ships inside the RecBole wheel
(``recbole/dataset_example/ml-100k/ml-100k.inter``, a TSV of user, item, rating, timestamp). ``make install`` puts it
there with ``pip install --no-deps recbole==1.2.1`` (RecBole itself is never imported); a path to the ``.inter`` file
or to the downloaded wheel works too. Nothing is downloaded here.

Each user's ratings, ordered by time (ties by item id), form a sequence of item indices ``1..n_items`` (0 pads).
Leave-last-out: the last item is the test target (history: everything before it), the one before is the validation
target, and every earlier position (from the second on) is a training target with the items before it as history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

import torch

INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
RECBOLE_PIN = "recbole==1.2.1"
HOW_TO_GET = (f"install it with `python -m pip install --no-deps {RECBOLE_PIN}` (what `make install` does), or pass "
              f"the path of ml-100k.inter or of the wheel from `pip download --no-deps {RECBOLE_PIN}`")
SPLITS = ("valid", "test")


def find_ml100k() -> Path:
    """The ``ml-100k.inter`` file inside the installed RecBole distribution.

    Raises:
        FileNotFoundError: RecBole is not installed, or its install lacks the file (the message says how to get it).
    """
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"MovieLens-100k not found: the recbole package is not installed; {HOW_TO_GET}"
                                ) from None
    path = Path(str(dist.locate_file(INTER_MEMBER)))
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens-100k not found at {path} (recbole {dist.version} installed); {HOW_TO_GET}")
    return path


def _read_bytes(source: Path) -> bytes:
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            if INTER_MEMBER not in wheel.namelist():
                raise FileNotFoundError(f"{source} has no {INTER_MEMBER}; expected the {RECBOLE_PIN} wheel")
            return wheel.read(INTER_MEMBER)
    if not source.is_file():
        raise FileNotFoundError(f"MovieLens-100k file {source} does not exist; {HOW_TO_GET}")
    return source.read_bytes()


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """Time-ordered item sequences, one per user.

    Attributes:
        sequences: per user (index 0..n_users-1), item indices in 1..n_items, oldest first.
        n_items: number of distinct items (index 0 is the padding item).
        user_ids / item_ids: the raw ids of each user / item index (item_ids[0] is 0, the padding).
        fingerprint: sha256 of the source file (checkpoints record it; a model is evaluated on the data it was
            trained for).
    """

    sequences: tuple[tuple[int, ...], ...]
    n_items: int
    user_ids: tuple[int, ...]
    item_ids: tuple[int, ...]
    fingerprint: str

    def __post_init__(self) -> None:
        short = [u for u, s in enumerate(self.sequences) if len(s) < 3]
        if short:
            raise ValueError(f"leave-last-out needs >= 3 items per user; users {short[:5]} have fewer")

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def head(self, n_users: int) -> MovieLens:
        """The first ``n_users`` users (all items kept, so item indices stay valid): a small slice for tests."""
        if not 1 <= n_users <= self.n_users:
            raise ValueError(f"n_users must be in [1, {self.n_users}], got {n_users}")
        return dataclasses.replace(self, sequences=self.sequences[:n_users], user_ids=self.user_ids[:n_users])

    def train_examples(self, max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every training position: ``(histories (N, max_len) left-padded with 0, targets (N,), users (N,))``."""
        rows, targets, users = [], [], []
        for u, seq in enumerate(self.sequences):
            for i in range(1, len(seq) - 2):  # the last two are the validation and test targets
                rows.append(seq[max(0, i - max_len) : i])
                targets.append(seq[i])
                users.append(u)
        return _pad_left(rows, max_len), torch.tensor(targets), torch.tensor(users)

    def split(self, name: str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(histories (n_users, max_len) left-padded, targets (n_users,))`` of the ``valid`` or ``test`` split."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        cut = -1 if name == "test" else -2
        rows = [seq[:cut][-max_len:] for seq in self.sequences]
        return _pad_left(rows, max_len), torch.tensor([seq[cut] for seq in self.sequences])

    def seen(self, name: str) -> list[set[int]]:
        """Per user, the items of the history of split ``name`` (excluded from that user's recommendations)."""
        cut = -1 if name == "test" else -2
        return [set(seq[:cut]) for seq in self.sequences]

    def train_counts(self) -> torch.Tensor:
        """How often each item index is a training interaction (validation / test targets excluded): (n_items + 1,)."""
        counts = torch.zeros(self.n_items + 1, dtype=torch.long)
        for seq in self.sequences:
            counts[list(seq[:-2])] += 1
        return counts


def _pad_left(rows: list[tuple[int, ...]], max_len: int) -> torch.Tensor:
    out = torch.zeros(len(rows), max_len, dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            out[r, max_len - len(row) :] = torch.tensor(row)
    return out


def load_movielens(source: str | Path | None = None) -> MovieLens:
    """Parse MovieLens-100k from ``source`` (``.inter`` file or RecBole wheel; default: the installed RecBole).

    Raises:
        FileNotFoundError: the data is not there (the message says how to get it).
        ValueError: the file is not a RecBole ``.inter`` table of user, item, rating, timestamp.
    """
    path = Path(source) if source is not None else find_ml100k()
    raw = _read_bytes(path)
    lines = raw.decode("utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:2] != ["user_id:token", "item_id:token"] or "timestamp:float" not in header:
        raise ValueError(f"{path}: expected a RecBole .inter header 'user_id:token item_id:token ... "
                         f"timestamp:float', got {header}")
    t_col = header.index("timestamp:float")
    events: dict[int, list[tuple[float, int]]] = {}
    for n, line in enumerate(lines[1:], start=2):
        cols = line.split("\t")
        try:
            user, item, stamp = int(cols[0]), int(cols[1]), float(cols[t_col])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: cannot parse {line!r} as user, item, ..., timestamp") from None
        events.setdefault(user, []).append((stamp, item))
    item_ids = sorted({item for rows in events.values() for _, item in rows})
    index = {item: i + 1 for i, item in enumerate(item_ids)}
    users = sorted(events)
    sequences = tuple(tuple(index[item] for _, item in sorted(events[u])) for u in users)
    return MovieLens(sequences, len(item_ids), tuple(users), (0, *item_ids), hashlib.sha256(raw).hexdigest())
