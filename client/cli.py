"""imgsearch: the command-line client.

    imgsearch index FOLDER          upload every image below FOLDER (skips what is indexed)
    imgsearch search IMAGE          most similar images, each method side by side (--json)
    imgsearch search --id ID        the same for a catalogue image (left out of its results)
    imgsearch delete ID             remove an image from the catalogue and every index
    imgsearch stats                 catalogue and index sizes, model versions
    imgsearch train                 train the autoencoder on the current catalogue
    imgsearch eval CATALOGUE QUERIES P@1, P@5, mAP@10 per method (class = parent folder)

The service URL and API key come from --url/--key or IMGSEARCH_URL/API_KEY.
"""

import argparse
import concurrent.futures
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .api import ApiClient, ClientError, content_id, image_files
from .evaluation import fused_gain, per_class, summarise

DEFAULT_URL = "http://127.0.0.1:8000"
# eval asks for this many results per method: the metrics read the first 10, and fusion
# weights are fitted on lists as long as the ones the gateway fuses.
EVAL_CANDIDATES = 50


@dataclass
class IndexSummary:
    found: int = 0
    added: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    ids: dict[str, Path] = field(default_factory=dict)  # content id -> file

    @property
    def rate(self) -> float:
        return self.added / self.seconds if self.seconds else 0.0


def index_folder(
    client: ApiClient, folder: Path, batch: int = 32, in_flight: int = 2, quiet: bool = False
) -> IndexSummary:
    """Upload a folder in batches; images already in the catalogue are skipped (by content hash),
    so an interrupted run resumes where it stopped. Returns once everything is searchable."""
    summary = IndexSummary()
    paths = image_files(folder)
    summary.found = len(paths)
    for path in paths:
        summary.ids.setdefault(content_id(path.read_bytes()), path)
    existing: set[str] = set()
    ids = list(summary.ids)
    for start in range(0, len(ids), 5_000):
        existing |= client.existing(ids[start : start + 5_000])
    todo = [summary.ids[i] for i in ids if i not in existing]
    summary.skipped = len(paths) - len(todo)
    started = time.monotonic()
    bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=quiet, smoothing=0.1)
    batches = [todo[i : i + batch] for i in range(0, len(todo), batch)]

    def upload_and_wait(chunk: list[Path]) -> tuple[int, list[dict[str, str]], dict[str, Any]]:
        body = client.add_images(chunk, root=folder)
        job = client.wait(body["job_id"])
        return len(body["images"]), body["rejected"], job

    try:
        # A few batches in flight: the next upload overlaps the workers' embedding.
        with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
            futures = {pool.submit(upload_and_wait, chunk): chunk for chunk in batches}
            for future in concurrent.futures.as_completed(futures):
                chunk = futures[future]
                try:
                    stored, rejected, job = future.result()
                except ClientError as err:
                    if err.refused_access:  # every other batch would be refused alike
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
                    summary.failed += [{"file": str(p), "reason": str(err)} for p in chunk]
                    bar.update(len(chunk))
                    continue
                summary.added += stored
                summary.failed += [
                    {"file": r["filename"], "reason": r["message"]} for r in rejected
                ]
                for method, outcome in job["methods"].items():
                    if outcome["status"] == "failed":
                        summary.failed.append(
                            {"file": f"{len(chunk)} images", "reason": f"{method}: {outcome}"}
                        )
                bar.update(len(chunk))
    finally:
        bar.close()
        summary.seconds = time.monotonic() - started
    return summary


def print_index_summary(summary: IndexSummary) -> None:
    print(
        f"{summary.found} images found: {summary.added} added, {summary.skipped} already "
        f"indexed, {len(summary.failed)} failed; {summary.rate:.1f} images/s upload to searchable"
    )
    for failure in summary.failed:
        print(f"  failed: {failure['file']}: {failure['reason']}")


def result_label(result: dict[str, Any]) -> str:
    """What a person calls an image (the service's label: metadata.label, else the file name)."""
    return str(result.get("label") or result.get("filename") or "?")


def search_sections(job: dict[str, Any]) -> list[tuple[str, list[tuple[str, ...]]]]:
    """One titled table per method, then the fused list: rank, score, label, the full id
    (what `imgsearch delete` takes) and, for the fused list, the rank in each method."""
    sections = []
    for method, outcome in job["methods"].items():
        if not outcome.get("results"):
            continue
        better = "higher" if outcome.get("higher_is_better", True) else "lower"
        metric = {"cosine": "cosine similarity", "euclidean": "Euclidean distance"}.get(
            outcome.get("metric"), outcome.get("metric", "score")
        )
        title = f"{method}: {metric}, {better} is more similar ({outcome.get('model_version')})"
        rows = [("rank", "score", "label", "id")]
        rows += [
            (str(r["rank"]), f"{r['score']:.3f}", result_label(r), r["id"])
            for r in outcome["results"]
        ]
        sections.append((title, rows))
    fused = job.get("fused") or {}
    if fused.get("results"):
        methods = [m for m in job["methods"] if job["methods"][m].get("results")]
        rows = [("rank", "label", "id", *(f"{m} rank" for m in methods))]
        rows += [
            (
                str(r["rank"]),
                result_label(r),
                r["id"],
                *(str(r.get("ranks", {}).get(m, "-")) for m in methods),
            )
            for r in fused["results"]
        ]
        sections.append(("fused: both methods' rankings combined", rows))
    return sections


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def evaluate(
    client: ApiClient,
    catalogue: Path,
    queries: Path,
    concurrency: int = 4,
    quiet: bool = False,
    train: bool = False,
    results_out: Path | None = None,
) -> dict[str, Any]:
    """Index CATALOGUE through the API (and train the autoencoder on it if asked), query every
    image of QUERIES, measure per method and for the fused list.

    RESULTS_OUT, if given, receives one JSON line per query with each method's ranked ids and
    scores: what ``services.gateway.fusion_calibration`` fits the fusion weights on."""
    indexed = index_folder(client, catalogue, quiet=quiet)
    training = None
    if train:
        job_id = client.request("POST", "/models/autoencoder/trainings", json={})["job_id"]
        training = client.wait(job_id)["methods"]["autoencoder"]
    labels = {image_id: path.parent.name for image_id, path in indexed.ids.items()}
    relevant: dict[str, int] = {}
    for label in labels.values():
        relevant[label] = relevant.get(label, 0) + 1
    query_paths = image_files(queries)

    def run(path: Path) -> tuple[str, dict[str, Any]]:
        job = client.wait(client.search(path, k=EVAL_CANDIDATES)["job_id"])
        return path.parent.name, job

    rankings: dict[str, list[tuple[str, list[str]]]] = {}
    notes: dict[str, str] = {}
    started = time.monotonic()
    raw = results_out.open("w") if results_out else contextlib.nullcontext()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool, raw:
        jobs = pool.map(run, query_paths)
        for label, job in tqdm(jobs, total=len(query_paths), desc="querying", disable=quiet):
            lists = {m: o for m, o in job["methods"].items()}
            lists["fused"] = job.get("fused", {})
            if results_out:
                line = {"label": label, "relevant": relevant.get(label, 0)}
                raw.write(json.dumps({**line, "methods": raw_lists(lists, labels)}) + "\n")
            for method, outcome in lists.items():
                if "reason" in outcome or outcome.get("status") == "failed":
                    notes[method] = outcome.get("reason") or outcome.get("error", "failed")
                    continue
                ranked = [labels.get(r["id"], "?") for r in outcome.get("results", [])]
                rankings.setdefault(method, []).append((label, ranked))
    methods = {m: summarise(r, relevant) for m, r in rankings.items()}
    report = {
        "catalog": {"folder": str(catalogue), "images": len(labels), "classes": len(relevant)},
        "queries": {"folder": str(queries), "images": len(query_paths)},
        "query_seconds": round(time.monotonic() - started, 1),
        "training": training,
        "methods": methods,
        "fused_gain": fused_gain(methods),
        "fusion": client.request("GET", "/stats").get("fusion"),
        "per_class": {m: per_class(r, relevant) for m, r in rankings.items()},
        "not_measured": notes,
    }
    return report


def raw_lists(lists: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """Each method's ranked (id, label, score) triples, for fitting fusion offline."""
    return {
        method: {
            "higher_is_better": outcome.get("higher_is_better", True),
            "results": [
                (r["id"], labels.get(r["id"], "?"), r["score"]) for r in outcome["results"]
            ],
        }
        for method, outcome in lists.items()
        if outcome.get("results")
    }


def print_eval(report: dict[str, Any]) -> None:
    rows = [("method", "queries", "P@1", "P@5", "mAP@10")]
    for method, m in report["methods"].items():
        rows.append(
            (method, str(m["queries"]), f"{m['p@1']:.3f}", f"{m['p@5']:.3f}", f"{m['map@10']:.3f}")
        )
    print_table(rows)
    gain = report.get("fused_gain")
    if gain:
        print(
            "fused gain over the best single method: "
            + ", ".join(
                f"{m} {gain[m]:+.3f} (vs {gain[f'best_single_{m}']})"
                for m in ("p@1", "p@5", "map@10")
            )
        )
    fusion = report.get("fusion")
    if fusion:
        print(f"fusion weights {fusion['weights']} ({fusion['source']}): {fusion['reason']}")
    for method, reason in report["not_measured"].items():
        print(f"{method}: not measured ({reason})")


ENVIRONMENT_HELP = f"""environment:
  IMGSEARCH_URL  the service's address when --url is not given (default {DEFAULT_URL})
  API_KEY        the API key when --key is not given; writes need it (`make run` keeps its
                 key in var/api_key: export API_KEY=$(cat var/api_key))"""


def connection_options(url_default: str | None, key_default: str | None) -> argparse.ArgumentParser:
    """--url and --key, for the main parser and (with no defaults of their own) each command."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=url_default, help="the service's address (IMGSEARCH_URL)")
    options.add_argument("--key", default=key_default, help="API key for writes (API_KEY)")
    return options


def main(argv: list[str] | None = None) -> int:
    env_url, env_key = os.environ.get("IMGSEARCH_URL", DEFAULT_URL), os.environ.get("API_KEY")
    parser = argparse.ArgumentParser(
        prog="imgsearch",
        description=__doc__.split("\n\n")[0],
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection_options(env_url, env_key)],
    )
    # --url and --key work after the command too ("imgsearch stats --url ..."); there they
    # have no defaults of their own, so they win only when given.
    command_options = [connection_options(argparse.SUPPRESS, argparse.SUPPRESS)]
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser(
        "index", help="upload every image below a folder", parents=command_options
    )
    index.add_argument("folder", type=Path)
    index.add_argument("--batch", type=int, default=32, help="images per upload request")
    search = commands.add_parser(
        "search", help="find the most similar images", parents=command_options
    )
    search.add_argument("image", type=Path, nargs="?", help="the query photo's file")
    search.add_argument(
        "--id",
        dest="image_id",
        metavar="ID",
        help="search with a catalogue image instead of a file: its full id, as search, "
        "the web page and the API show it (the image is left out of its own results)",
    )
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--methods", help="comma-separated: vgg16,autoencoder")
    search.add_argument("--json", action="store_true", help="print the whole job as JSON")
    delete = commands.add_parser(
        "delete", help="remove an image everywhere", parents=command_options
    )
    delete.add_argument("id", help="the image's full id, as search and the web page show it")
    commands.add_parser(
        "stats", help="catalogue and index sizes, model versions", parents=command_options
    )
    train = commands.add_parser(
        "train", help="train the autoencoder on the catalogue", parents=command_options
    )
    train.add_argument("--epochs", type=int)
    train.add_argument("--no-wait", action="store_true", help="print the job id and return")
    evaluation = commands.add_parser(
        "eval", help="retrieval quality: P@1, P@5, mAP@10", parents=command_options
    )
    evaluation.add_argument("catalogue", type=Path)
    evaluation.add_argument("queries", type=Path)
    evaluation.add_argument("--json-out", type=Path, help="also write the report here")
    evaluation.add_argument("--concurrency", type=int, default=4)
    evaluation.add_argument(
        "--results-out", type=Path, help="write every query's ranked lists here (JSON lines)"
    )
    evaluation.add_argument(
        "--train", action="store_true", help="train the autoencoder on CATALOGUE before querying"
    )
    args = parser.parse_args(argv)
    if args.command == "search" and (args.image is None) == (args.image_id is None):
        search.error("give either an IMAGE file or --id ID, not both and not neither")
    client = ApiClient(args.url, args.key)
    try:
        return _run(client, args)
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130


def _run(client: ApiClient, args: argparse.Namespace) -> int:
    for folder in [getattr(args, name, None) for name in ("folder", "catalogue", "queries")]:
        if folder is not None and not folder.is_dir():
            raise ClientError(f"{folder} is not a folder")
    image = getattr(args, "image", None)
    if image is not None and not image.is_file():
        raise ClientError(f"{image}: no such file")
    if args.command == "index":
        summary = index_folder(client, args.folder, batch=args.batch)
        print_index_summary(summary)
        return 1 if summary.failed else 0
    if args.command == "search":
        accepted = client.search(args.image, args.k, args.methods, image_id=args.image_id)
        job = client.wait(accepted["job_id"])
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            for n, (title, rows) in enumerate(search_sections(job)):
                print(("\n" if n else "") + title)
                print_table(rows)
            for method, outcome in job["methods"].items():
                if "message" in outcome or "error" in outcome:
                    print(f"{method}: {outcome.get('message') or outcome.get('error')}")
        return 0 if job["status"] == "done" else 1
    if args.command == "delete":
        client.request("DELETE", f"/images/{args.id}")
        print(f"deleted {args.id}")
        return 0
    if args.command == "stats":
        print(json.dumps(client.request("GET", "/stats"), indent=2))
        return 0
    if args.command == "train":
        options = {"epochs": args.epochs} if args.epochs else {}
        job_id = client.request("POST", "/models/autoencoder/trainings", json=options)["job_id"]
        if args.no_wait:
            print(job_id)
            return 0
        return _follow_training(client, job_id)
    if args.command == "eval":
        report = evaluate(
            client,
            args.catalogue,
            args.queries,
            args.concurrency,
            train=args.train,
            results_out=args.results_out,
        )
        print_eval(report)
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    raise AssertionError(args.command)


def _follow_training(client: ApiClient, job_id: str) -> int:
    last = None
    while True:
        job = client.request("GET", f"/jobs/{job_id}", params={"wait": 5})
        outcome = job["methods"]["autoencoder"]
        progress = outcome.get("progress")
        if progress and progress != last:
            if progress.get("phase") == "training":
                print(
                    f"epoch {progress['epoch']}/{progress['epochs']}: loss {progress['loss']:.4f}"
                    f" val_loss {progress['val_loss']:.4f} ETA {progress['eta_seconds']:.0f}s"
                )
            else:
                print(progress.get("phase"), {k: v for k, v in progress.items() if k != "phase"})
            last = progress
        if job["status"] in ("done", "failed"):
            print(json.dumps(outcome, indent=2))
            return 0 if job["status"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
