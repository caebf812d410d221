"""``concilium eval --shard I/N`` and ``concilium merge``: one eval split over machines
without Ray, then put back together as the folder a single run gives.

The rule: item k of the data (counted from 0 in file order, after ``--limit``) belongs
to shard ``k % N + 1``, so shard I/N runs the items whose index ``% N == I - 1``: the
same items on every machine, whatever the others do. Each shard folder holds
``shard.json``, what a merge needs beyond the rows: the shard and N, a fingerprint of
the whole data (every item's id, question, answer and choices), the methods in order,
the ``--scorer`` and the shard's item ids in data order.

``concilium merge OUT DIR_1 ... DIR_N`` refuses folders of different evals (data,
methods, scorer or N), a missing shard, an unfinished one, and two rows of one
(method, item) that disagree; rows given twice are kept once. It writes
``OUT/results.jsonl`` (rows in a single run's order: by method, then by item) and
the summary a single run writes (``summarise`` and ``write_summary`` of
``concilium.evals``; the gold answers come from the rows).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._common import echo_summary, guard

if TYPE_CHECKING:
    from concilium.evals import EvalRecord, ItemResult, MethodSummary

__all__ = ["SHARD_FILE", "Shard", "shard_option", "start_shard", "merge_shards", "merge_command"]

T = TypeVar("T")
SHARD_FILE = "shard.json"
_OUTCOME = ("gold", "answer", "correct", "failed", "samples")
"""The fields two rows of one (method, item) must agree on to count as one result."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 1) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/4"`` -> ``Shard(2, 4)``.

        Example:
            >>> Shard.parse("2/4").select(list("abcdefghij"))
            ['b', 'f', 'j']
        """
        from concilium._errors import UserError

        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if found is None or not 1 <= int(found[1]) <= int(found[2]):
            raise UserError(f"--shard {text!r}: give I/N with 1 <= I <= N, e.g. --shard 1/4")
        return cls(int(found[1]), int(found[2]))

    def select(self, items: Sequence[T]) -> list[T]:
        """The items of this shard: those whose index ``% count == index - 1``."""
        return [item for k, item in enumerate(items) if k % self.count == self.index - 1]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    from concilium._errors import UserError

    try:
        return None if value is None else Shard.parse(value)
    except UserError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None


shard_option = click.option(
    "--shard",
    metavar="I/N",
    callback=_parse_shard,
    help="Run only shard I of N: the items whose index % N == I-1 (0-based, file order). "
    "Put the shard folders together with concilium merge.",
)


def _fingerprint(records: Sequence[EvalRecord]) -> str:
    items = [[r.id, r.question, r.answer, r.choices] for r in records]
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:32]


def start_shard(
    out: Path, shard: Shard, records: Sequence[EvalRecord], methods: list[str], scorer: str | None
) -> list[EvalRecord]:
    """Write ``out/shard.json`` (or check the one a first attempt wrote); return the
    shard's records. ``records`` are all the items, ``scorer`` the ``--scorer`` given."""
    from concilium._errors import UserError

    mine = shard.select(records)
    manifest = {
        "shard": str(shard),
        "items": len(records),
        "data": _fingerprint(records),
        "methods": methods,
        "scorer": scorer,
        "ids": [r.id for r in mine],
    }
    path = out / SHARD_FILE
    if path.exists():  # a rerun to resume: the same shard of the same eval, or refused
        before = _read_manifest(out)
        differs = [
            k for k in ("shard", "data", "methods", "scorer") if before.get(k) != manifest[k]
        ]
        if differs:
            raise UserError(
                f"{out} holds shard {before.get('shard')} of another eval ({', '.join(differs)} "
                "differ); give this shard a new --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return mine


def _read_manifest(folder: Path) -> dict[str, Any]:
    from concilium._errors import UserError

    path = folder / SHARD_FILE
    if not path.exists():
        raise UserError(
            f"{folder} is not a shard folder (no {SHARD_FILE}); shard folders are written by "
            "concilium eval ... --shard I/N --out DIR"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        Shard.parse(manifest["shard"])
        return dict(manifest)
    except (ValueError, KeyError, TypeError, UserError):
        raise UserError(f"{path} is damaged; rerun that shard into a new --out") from None


def _rows(folder: Path) -> list[ItemResult]:
    path = folder / "results.jsonl"
    rows: list[ItemResult] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the shard is unfinished, said below
    return rows


def _check_same_eval(manifests: dict[Path, dict[str, Any]]) -> dict[str, Any]:
    """The manifest all folders share (one eval), and every shard present."""
    from concilium._errors import UserError

    (first, head), *rest = manifests.items()
    count = Shard.parse(head["shard"]).count
    for folder, manifest in rest:
        other = Shard.parse(manifest["shard"]).count
        differs = [f"N ({other} vs {count})"] if other != count else []
        for field in ("data", "methods", "scorer"):
            if manifest[field] != head[field]:
                values = "" if field == "data" else f" ({manifest[field]} vs {head[field]})"
                differs.append(field + values)
        if differs:
            raise UserError(
                f"{folder} (shard {manifest['shard']}) and {first} (shard {head['shard']}) are "
                f"shards of different evals: their {', '.join(differs)} differ; merge the "
                "shards of one concilium eval command"
            )
    have = {Shard.parse(m["shard"]).index for m in manifests.values()}
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in have]
    if missing:
        raise UserError(
            f"shard {', '.join(missing)} missing (given: "
            f"{', '.join(f'{i}/{count}' for i in sorted(have))}); give every shard's folder"
        )
    return head


def _describe(row: ItemResult, folder: Path) -> str:
    verdict = "failed" if row["failed"] else "correct" if row["correct"] else "wrong"
    return f"{folder} has answer {row['answer']!r} ({verdict})"


def _gather(manifests: dict[Path, dict[str, Any]], methods: list[str]) -> list[ItemResult]:
    """Every folder's rows, each (method, item) once, in a single run's order."""
    from concilium._errors import UserError

    count = Shard.parse(next(iter(manifests.values()))["shard"]).count
    order: dict[str, int] = {}  # item id -> its index in the data
    for manifest in manifests.values():
        i = Shard.parse(manifest["shard"]).index
        order.update((item, i - 1 + count * j) for j, item in enumerate(manifest["ids"]))
    kept: dict[tuple[str, str], tuple[ItemResult, Path]] = {}
    for folder, manifest in manifests.items():
        ids = set(manifest["ids"])
        # a later line of a key replaces an earlier one (a rerun retries a failed row)
        latest = {(row["method"], row["id"]): row for row in _rows(folder)}
        for key, row in latest.items():
            if row["method"] not in methods or row["id"] not in ids:
                raise UserError(
                    f"{folder}/results.jsonl has a row of method {row['method']!r} on item "
                    f"{row['id']!r}, which is not in its shard {manifest['shard']}: the folder "
                    "holds runs of another eval; rerun the shard into a new --out"
                )
            if key in kept:
                before, where = kept[key]
                if any(before[k] != row[k] for k in _OUTCOME):
                    raise UserError(
                        f"conflicting results for {key[0]} on item {key[1]!r}: "
                        f"{_describe(before, where)}, {_describe(row, folder)}; "
                        "merge only one of these folders"
                    )
                continue
            kept[key] = (row, folder)
    for folder, manifest in manifests.items():  # a shard given twice may be whole once
        left = [i for i in manifest["ids"] for m in methods if (m, i) not in kept]
        if left:
            raise UserError(
                f"{folder} (shard {manifest['shard']}) is unfinished: {len(left)} of "
                f"{len(manifest['ids']) * len(methods)} runs missing; rerun its concilium eval "
                "command with the same --out, then merge"
            )
    place = {m: n for n, m in enumerate(methods)}
    rows = sorted(kept.values(), key=lambda kv: (place[kv[0]["method"]], order[kv[0]["id"]]))
    return [row for row, _ in rows]


def merge_shards(
    out: Path, folders: Sequence[Path]
) -> tuple[list[MethodSummary], Path, list[Path]]:
    """Merge shard folders into ``out``; return the summary, its file and the plots."""
    from concilium._errors import UserError
    from concilium.evals import default_scorer, scorer_from_name, summarise, write_summary

    if any(f.resolve() == out.resolve() for f in folders):
        raise UserError(f"OUT {out} is one of the shard folders; merge into a new folder")
    if (out / "results.jsonl").exists():
        raise UserError(f"{out} already holds results.jsonl; merge into a new folder")
    manifests = {folder: _read_manifest(folder) for folder in folders}
    head = _check_same_eval(manifests)
    methods: list[str] = list(head["methods"])
    rows = _gather(manifests, methods)
    # the scorer the shards ran with: the one named, or the default by all items' answers
    firsts = [r for r in rows if r["method"] == methods[0]]  # one row per item
    golds, mc = [r["gold"] for r in firsts], any(r.get("choices") for r in firsts)
    scorer = scorer_from_name(head["scorer"]) if head["scorer"] else default_scorer(golds, mc)

    def predicate(row: dict[str, Any]) -> object:
        gold, options = str(row["gold"]), row.get("choices")
        return lambda answer: scorer(answer, gold, options)

    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    summary = summarise(rows, methods, predicate, scorer=scorer)
    path, plots = write_summary(summary, out)
    return summary, path, plots


@click.command("merge")
@click.argument("out_dir", metavar="OUT", type=click.Path(file_okay=False, path_type=Path))
@click.argument(
    "folders",
    nargs=-1,
    required=True,
    metavar="DIR...",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@guard(failed="merge failed")
def merge_command(out_dir: Path, folders: tuple[Path, ...], as_json: bool) -> None:
    """Merge the shard folders of one eval (concilium eval ... --shard I/N --out DIR)
    into OUT: one results.jsonl and the summary.json a single run writes."""
    summary, path, plots = merge_shards(out_dir, folders)
    files = [
        ("results", out_dir / "results.jsonl"),
        ("summary", path),
        *(("plot", p) for p in plots),
    ]
    echo_summary(summary, as_json, files)
