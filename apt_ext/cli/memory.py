"""``apt-ext memory add|search|answer|stats|export|import --db FILE --ns NAME``.

Needs neither torch nor the native ops. search, answer, stats and export open the database
read-only (they create nothing and work on a read-only file or mount); add and import open it
for writing (and create it). A --db that cannot be used is one line naming --db (exit code 2).
The embedding model loads only for add, import, search and answer, quietly unless --verbose (or
stderr is a terminal, where its progress shows)."""
from __future__ import annotations

import argparse
import json
import sys

from apt_ext.cli.errors import UsageError

READS = ("search", "answer", "stats", "export")
# the option or argument behind an AIMMemory error message, by the message's first word
_ARGUMENT = {"text": "text", "evidence": "--evidence", "namespace": "--ns", "query": "query", "k": "-k",
             "line": "input", "record": "input"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("memory", help="AIM-Memory: add, search and export memories",
                                   description="AIM-Memory on a SQLite file (or a PostgreSQL URL): store "
                                   "texts, recall them for a query, print stats, export and import JSONL.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", required=True, help="SQLite file of the memory (add and import create it; the "
                       "other actions only read it) or a postgresql:// URL")
        p.add_argument("--ns", default=None, help="namespace (user or session) (default: 'default'; "
                       "stats: every namespace; import: each record's own namespace)")
        p.add_argument("--verbose", action="store_true", help="show the embedding model's loading progress")
        return p

    add = common(actions.add_parser("add", help="store TEXT (or stdin lines with '-')",
                                    description="Store TEXT (or each non-empty stdin line with '-') as a memory."))
    add.add_argument("text", help="the memory text, or '-' to store each stdin line")
    add.add_argument("--evidence", default=None, help="full evidence text (default: the text)")
    for name, helptext in (("search", "route a query, print the recalled nodes"),
                           ("answer", "route a query, print the answer() dict as JSON")):
        p = common(actions.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + "."))
        p.add_argument("query", help="the question or text to recall memories for")
        p.add_argument("-k", type=int, default=None, help="nodes to recall (default: the memory's top_k)")
        p.add_argument("--mode", choices=("fast", "strict", "auto"), default="auto",
                       help="strict adds each node's full evidence; auto picks strict for queries that ask "
                       "for exact text")
    common(actions.add_parser("stats", help="print stats as JSON", description="Print the memory's stats as JSON."))
    exp = common(actions.add_parser("export", help="write nodes as JSONL", description="Write nodes as JSONL."))
    exp.add_argument("-o", "--output", default="-", help="file to write ('-': stdout)")
    exp.add_argument("--all", action="store_true", help="every namespace, not only --ns")
    imp = common(actions.add_parser("import", help="add nodes from an export JSONL file",
                                    description="Add the nodes of an export JSONL file."))
    imp.add_argument("input", help="JSONL file, or '-' for stdin")
    parser.set_defaults(func=run, needs_ops=False)


def _quiet_model_loading(verbose: bool) -> None:
    """Hide the Hugging Face progress bars ("Loading weights") unless asked for or on a terminal."""
    if verbose or sys.stderr.isatty():
        return
    import os
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run(args: argparse.Namespace) -> int:
    from apt_ext.memory import create_aim_memory
    from apt_ext.memory.stores import StoreError

    _quiet_model_loading(args.verbose)
    try:
        memory = create_aim_memory(path=args.db, read_only=args.action in READS)
        with memory:
            return _dispatch(memory, args)
    except StoreError as exc:
        raise UsageError("--db", str(exc)) from exc
    except (ValueError, TypeError) as exc:  # the text, query, -k, --ns or import records
        message = str(exc)
        raise UsageError(_ARGUMENT.get(message.split(" ", 1)[0].rstrip(":"), args.action), message) from exc


def _open(path: str, mode: str, option: str):
    try:
        return open(path, mode, encoding="utf-8")
    except OSError as exc:
        raise UsageError(option, f"cannot open {path}: {exc.strerror or exc}") from exc


def _dispatch(memory, args: argparse.Namespace) -> int:
    ns = args.ns or "default"
    if args.action == "add":
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()] if args.text == "-" else [args.text]
        for text in texts:
            node = memory.write_memory(text, namespace=ns, evidence=args.evidence)
            print(f"rejected (write gate): {text!r}" if node is None else
                  f"stored #{node.id} [{ns}] {node.summary}")
    elif args.action == "search":
        nodes, refill = memory.route_memory(args.query, mode=args.mode, namespace=ns, k=args.k)
        if not nodes:
            print("no memory above the similarity threshold")
        for i, node in enumerate(nodes):
            print(f"{i + 1}. #{node.id} score={node.score:.3f} w={node.w:.3f} {node.summary}")
            if refill:
                print(f"   evidence: {refill[i]}")
    elif args.action == "answer":
        print(json.dumps(memory.answer(args.query, mode=args.mode, namespace=ns, k=args.k),
                         ensure_ascii=False, indent=2))
    elif args.action == "stats":
        print(json.dumps(memory.stats(namespace=args.ns), ensure_ascii=False, indent=2))
    elif args.action == "export":
        out = sys.stdout if args.output == "-" else _open(args.output, "w", "--output")
        try:
            count = memory.export_jsonl(out, namespace=None if args.all else ns)
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"exported {count} nodes", file=sys.stderr)
    elif args.action == "import":
        src = sys.stdin if args.input == "-" else _open(args.input, "r", "input")
        try:
            count = memory.import_jsonl(src, namespace=args.ns)
        finally:
            if src is not sys.stdin:
                src.close()
        print(f"imported {count} nodes")
    return 0
