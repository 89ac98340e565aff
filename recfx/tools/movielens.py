"""``recfx movielens train|eval``: train the MovieLens-100k models; Recall@k / NDCG@k of float vs FP8 backends.

``train generative|ranking --out DIR`` writes a checkpoint folder (safetensors + JSON). ``eval DIR...`` recommends
for every user with the float model and with each backend (any registered name: ``eager-fp8``, ``ort-fp8``, a GPU
FP8 backend), and reports each metric's paired-bootstrap interval of backend - float. Exit status: 0, or 2 for bad
options / missing data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from recfx.tools.commands import command

log = logging.getLogger(__name__)
METRICS = ("recall", "ndcg")
CALIBRATION_BATCHES = 4  # real batches the FP8 report, auto_exclude and sensitivity are measured on


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated backend names like eager-fp8,ort-fp8")
    return names


@command("movielens", help="train the MovieLens-100k generative / ranking models; evaluate float vs FP8 backends")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    train = sub.add_parser("train", help="train one model and write a checkpoint folder")
    train.add_argument("kind", choices=("generative", "ranking"))
    train.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors, model.json)")
    train.add_argument("--epochs", type=int, default=None, help="epochs (default: 3 generative, 2 ranking)")
    train.add_argument("--batch-size", type=int, default=256, help="examples per step (default 256)")
    train.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, semantic ids and shuffling (default 0)")
    train.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (quick runs)")
    _common(train)
    ev = sub.add_parser("eval", help="Recall@k / NDCG@k over all users: float vs each backend, with intervals")
    ev.add_argument("checkpoints", nargs="+", help="checkpoint folders written by `recfx movielens train`")
    ev.add_argument("--backends", type=_names, default=("eager-fp8", "ort-fp8"),
                    help="comma-separated registered backends compared with the float model (default "
                         "eager-fp8,ort-fp8); a backend that cannot run here is an error, never skipped")
    ev.add_argument("--split", choices=("test", "valid"), default="test", help="held-out item (default test)")
    ev.add_argument("--k", type=int, default=10, help="recommendation list length (default 10)")
    ev.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ev.add_argument("--auto-exclude", type=float, default=None, metavar="COSINE",
                    help="QuantConfig.auto_exclude: keep the fewest most sensitive layers in float so that the model "
                         "output cosine reaches COSINE on real batches; the report lists them")
    ev.add_argument("--sensitivity", action="store_true",
                    help="QuantConfig.sensitivity: rank the layers by the output error each causes alone (JSON)")
    ev.add_argument("--device", default="cpu", help="device of the models and inputs (default cpu)")
    ev.add_argument("--json", default=None, help="write every number to this JSON file")
    ev.add_argument("--markdown", default=None, help="write the table as Markdown to this file")
    _common(ev)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="ml-100k.inter or the recbole 1.2.1 wheel (default: installed recbole)")
    p.add_argument("--users", type=int, default=None, help="only the first N users (a quick slice)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")


def run(args: argparse.Namespace) -> int:
    import torch

    from recfx.models.movielens import load_movielens

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    data = load_movielens(args.data)
    if args.users is not None:
        data = data.head(args.users)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _train(args, data) if args.action == "train" else _eval(args, data)
    finally:
        torch.set_num_threads(previous)  # the process (a test run, a notebook) keeps its own setting


def _train(args: argparse.Namespace, data: Any) -> int:
    from recfx.models.movielens import (
        GenerativeConfig,
        RankingConfig,
        TrainConfig,
        save_checkpoint,
        train_generative,
        train_ranking,
    )
    from recfx.models.movielens.evaluate import recall_ndcg, top_k

    epochs = args.epochs if args.epochs is not None else (3 if args.kind == "generative" else 2)
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      max_steps=args.max_steps)
    if not Path(args.out).parent.is_dir():
        raise FileNotFoundError(f"cannot write {args.out}: folder {Path(args.out).parent} does not exist")
    start = time.perf_counter()
    model: Any
    if args.kind == "generative":
        model = train_generative(data, GenerativeConfig(n_items=data.n_items), cfg)
    else:
        model = train_ranking(data, RankingConfig(n_users=data.n_users, n_items=data.n_items), cfg)
    seconds = time.perf_counter() - start
    _, targets = data.split("valid", 1)
    recall, ndcg = recall_ndcg(top_k(model, model, data, "valid", 10), targets)
    valid = {"recall@10": float(recall.mean()), "ndcg@10": float(ndcg.mean())}
    save_checkpoint(args.out, model, data, {"train": cfg.to_dict(), "train_seconds": round(seconds, 1),
                                            "threads": args.threads, "valid": valid})
    print(f"trained {args.kind} in {seconds:.0f} s; valid Recall@10 {valid['recall@10']:.4f} "
          f"NDCG@10 {valid['ndcg@10']:.4f}; wrote {args.out}")
    return 0


def _eval(args: argparse.Namespace, data: Any) -> int:
    from recfx._io import atomic_write_text
    from recfx.backends import BACKENDS

    for out in filter(None, (args.json, args.markdown)):
        if not Path(out).parent.is_dir():
            raise FileNotFoundError(f"cannot write {out}: folder {Path(out).parent} does not exist")
    if args.k < 1 or args.resamples < 1:
        raise ValueError(f"--k and --resamples must be >= 1, got {args.k} and {args.resamples}")
    for backend in args.backends:  # an unknown name fails here, before any model runs
        BACKENDS.get(backend)
    rows = [row for path in args.checkpoints for row in evaluate_checkpoint(path, data, args)]
    table = markdown_table(rows, args.k)
    print(table)
    if args.markdown:
        atomic_write_text(args.markdown, table + "\n")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    return 0


def evaluate_checkpoint(path: str, data: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per backend: metrics of the float model and of the backend, differences and intervals."""
    import recfx
    from recfx.backends import BACKENDS
    from recfx.models.movielens import load_checkpoint
    from recfx.models.movielens.evaluate import example_inputs, paired_bootstrap, recall_ndcg, top_k

    model, manifest = load_checkpoint(path, data)
    kind = manifest["kind"]
    model = model.to(args.device)
    _, targets = data.split(args.split, 1)
    start = time.perf_counter()
    base_lists = top_k(model, model, data, args.split, args.k)
    base = recall_ndcg(base_lists, targets)
    float_seconds = time.perf_counter() - start
    rows = []
    for backend in args.backends:
        few, per_batch = (8, 32) if kind == "generative" else (2, 8)  # users (ranking: x every item)
        example = example_inputs(model, data, args.split, few, args.device)
        quant, calibration = None, None
        if BACKENDS.get(backend).fp8:  # real batches for the FP8 report (and auto_exclude / sensitivity runs)
            quant = recfx.QuantConfig(auto_exclude=args.auto_exclude, sensitivity=args.sensitivity, progress=False)
            calibration = [example_inputs(model, data, args.split, per_batch, args.device, first=i * per_batch)
                           for i in range(CALIBRATION_BATCHES)]
        start = time.perf_counter()
        compiled = recfx.compile(model, example, backend=backend, quant=quant, calibration=calibration)
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        lists = top_k(compiled, model, data, args.split, args.k)
        cand = recall_ndcg(lists, targets)
        seconds = time.perf_counter() - start
        fp8 = compiled.report.sections.get("fp8")
        fp8_summary = None if fp8 is None else {
            "linears": fp8.linears, "quantized": fp8.quantized, "output_cosine": fp8.output_cosine,
            "outputs": [dataclasses.asdict(o) for o in fp8.outputs], "sensitivity": fp8.sensitivity,
            "auto_exclude_cosine": fp8.auto_exclude_cosine}
        row: dict[str, Any] = {
            "model": manifest["kind"], "checkpoint": str(path), "backend": backend, "split": args.split,
            "users": data.n_users, "k": args.k, "float_seconds": round(float_seconds, 1),
            "compile_seconds": round(compile_seconds, 1), "eval_seconds": round(seconds, 1),
            "kept_float": list(getattr(fp8, "auto_excluded", []) or []), "fp8_report": fp8_summary,
            "lists_changed": int((lists != base_lists).any(dim=1).sum()),  # users whose top-k differs at all
            "list_overlap": _overlap(base_lists, lists),
            "hits_gained": int(((cand[0] > 0) & (base[0] == 0)).sum()),
            "hits_lost": int(((cand[0] == 0) & (base[0] > 0)).sum()),
        }
        for i, metric in enumerate(METRICS):
            row[metric] = paired_bootstrap(base[i], cand[i], args.resamples).to_dict()
        rows.append(row)
        log.info("%s %s: %s", manifest["kind"], backend, row)
    return rows


def _overlap(a: Any, b: Any) -> float:
    """Mean over users of |a ∩ b| / k: how much of the float top-k list the backend also recommends."""
    shared = [len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]
    return sum(shared) / len(shared)


def markdown_table(rows: list[dict[str, Any]], k: int) -> str:
    """One line per (model, backend): float and backend metrics, difference, its interval and the 1% verdict."""
    head = (f"| model | backend | users | Recall@{k} float | Recall@{k} backend | diff (rel.) | 95% CI of diff | "
            f"NDCG@{k} float | NDCG@{k} backend | diff (rel.) | 95% CI of diff | top-{k} overlap | lists changed | "
            "hits +/- | within 1% & CI contains 0 | kept in float (auto_exclude) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        cells = [row["model"], row["backend"], str(row["users"])]
        ok = True
        for metric in METRICS:
            d = row[metric]
            cells += [f"{d['baseline']:.4f}", f"{d['candidate']:.4f}",
                      f"{d['diff']:+.4f} ({d['relative'] * 100:+.2f}%)", f"[{d['low']:+.4f}, {d['high']:+.4f}]"]
            ok = ok and abs(d["relative"]) <= 0.01 and d["contains_zero"]
        cells += [f"{row['list_overlap'] * 100:.1f}%", str(row["lists_changed"]),
                  f"+{row['hits_gained']} / -{row['hits_lost']}", "yes" if ok else "no",
                  ", ".join(row["kept_float"]) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
