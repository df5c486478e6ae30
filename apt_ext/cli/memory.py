"""``apt-ext memory add|search|answer|stats|export|import --db FILE --ns NAME``."""
from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("memory", help="AIM-Memory: add, search and export memories")
    actions = parser.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", required=True, help="SQLite file of the memory (created if missing) or a "
                       "postgresql:// URL")
        p.add_argument("--ns", default=None, help="namespace (user or session); default 'default' "
                       "(import: each record's own namespace)")
        return p

    add = common(actions.add_parser("add", help="store TEXT (or stdin lines with '-')"))
    add.add_argument("text", help="the memory text, or '-' to store each stdin line")
    add.add_argument("--evidence", default=None, help="full evidence text (default: the text)")
    for name, helptext in (("search", "route a query, print the recalled nodes"),
                           ("answer", "route a query, print the answer() dict")):
        p = common(actions.add_parser(name, help=helptext))
        p.add_argument("query")
        p.add_argument("-k", type=int, default=None, help="nodes to recall (default top_k)")
        p.add_argument("--mode", choices=("fast", "strict", "auto"), default="auto")
    common(actions.add_parser("stats", help="print stats as JSON"))
    exp = common(actions.add_parser("export", help="write nodes as JSONL"))
    exp.add_argument("-o", "--output", default="-", help="file (default stdout)")
    exp.add_argument("--all", action="store_true", help="every namespace, not only --ns")
    imp = common(actions.add_parser("import", help="add nodes from an export JSONL file"))
    imp.add_argument("input", help="JSONL file, or '-' for stdin")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from apt_ext.memory import create_aim_memory

    try:
        memory = create_aim_memory(path=args.db)
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        print(f"apt-ext memory: {exc}", file=sys.stderr)
        return 2
    try:
        with memory:
            return _dispatch(memory, args)
    except (ValueError, TypeError, RuntimeError, KeyError, OSError) as exc:
        print(f"apt-ext memory {args.action}: {exc}", file=sys.stderr)
        return 2


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
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
        try:
            count = memory.export_jsonl(out, namespace=None if args.all else ns)
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"exported {count} nodes", file=sys.stderr)
    elif args.action == "import":
        src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
        try:
            count = memory.import_jsonl(src, namespace=args.ns)
        finally:
            if src is not sys.stdin:
                src.close()
        print(f"imported {count} nodes")
    return 0
