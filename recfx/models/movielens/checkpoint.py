"""Checkpoints of the MovieLens models: a folder with ``model.safetensors`` (tensors only) and ``model.json``.

``model.json`` names the kind (``generative`` / ``ranking``), the model config, the training config and the
fingerprint of the data the model was trained on. Loading builds the model from the config and loads the tensors
strictly (every key, every shape); no code is read from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recfx._io import atomic_path, atomic_write_text
from recfx.models.movielens.data import MovieLens, load_movielens
from recfx.models.movielens.generative import GenerativeConfig, GenerativeRecommender
from recfx.models.movielens.ranking import RankingConfig, RankingModel

FORMAT = "recfx-movielens/1"
WEIGHTS, MANIFEST = "model.safetensors", "model.json"
KINDS: dict[str, tuple[type[Any], type[torch.nn.Module]]] = {
    "generative": (GenerativeConfig, GenerativeRecommender),
    "ranking": (RankingConfig, RankingModel),
}


def kind_of(model: torch.nn.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"expected one of {', '.join(c.__name__ for _, c in KINDS.values())}, got {type(model).__name__}")


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def save_checkpoint(folder: str | Path, model: torch.nn.Module, data: MovieLens, extra: dict[str, Any]) -> Path:
    """Write the model's tensors and manifest into ``folder`` (created if missing; each file written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    config: Any = model.cfg
    manifest = {"format": FORMAT, "kind": kind_of(model), "config": config.to_dict(), "n_users": data.n_users,
                "data_fingerprint": data.fingerprint, **extra}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked ``model.json`` of a checkpoint folder.

    Raises:
        FileNotFoundError: the folder lacks ``model.json`` or ``model.safetensors``.
        ValueError: an unknown format or kind.
    """
    folder = Path(folder)
    for name in (MANIFEST, WEIGHTS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a MovieLens checkpoint: {name} is missing (write one with "
                                    "`recfx movielens train`)")
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("kind") not in KINDS:
        raise ValueError(f"{folder / MANIFEST}: unknown kind {manifest.get('kind')!r}; known: {', '.join(KINDS)}")
    return manifest


def load_checkpoint(folder: str | Path, data: MovieLens | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode, CPU) and its manifest.

    Args:
        folder: a folder written by :func:`save_checkpoint`.
        data: if given, the data must be the data the model was trained on (same file, same number of users).

    Raises:
        FileNotFoundError / ValueError: as :func:`read_manifest`; tensors that do not fit the config; other data.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    config_cls, model_cls = KINDS[manifest["kind"]]
    model = model_cls(config_cls.from_dict(manifest["config"]))
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{folder / WEIGHTS} does not fit its config: {err}") from None
    if data is not None and (data.fingerprint != manifest["data_fingerprint"] or data.n_users != manifest["n_users"]):
        raise ValueError(f"{folder} was trained on other data (fingerprint {manifest['data_fingerprint'][:12]}, "
                         f"{manifest['n_users']} users); got {data.fingerprint[:12]} with {data.n_users} users: "
                         "pass the same --data and --users as for training")
    return model.eval(), manifest


def training_data(folder: str | Path, source: str | Path | None = None) -> MovieLens:
    """The users a checkpoint was trained on (the first ``n_users`` of MovieLens-100k from ``source``)."""
    n_users = read_manifest(folder)["n_users"]
    data = load_movielens(source)
    return data.head(n_users) if n_users < data.n_users else data
