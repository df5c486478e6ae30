"""AIM-Memory recall on REAL multi-session conversations (REALTALK): the methods of
``benchmarks/aim_memory_recall.py`` (dense MiniLM, dense over "Speaker: text", BM25, string
match, AIM ``route_memory`` text only and with the conversation fields), on 10 chats of people
texting each other for 21 days, in one run.

Data: REALTALK (Lee et al. 2025, arXiv 2502.13270), https://github.com/danny911kr/REALTALK:
the 10 files ``data/Chat_*.json`` at the top of its ``data/`` folder (~400-1,500 turns and ~70
QA items per chat, each item naming its evidence turns by ``dia_id``). The data is not copied
into this repository; fetch it and pass the folder:

  git clone https://github.com/danny911kr/REALTALK
  python benchmarks/aim_memory_realtalk.py --realtalk-dir REALTALK/data

Only ``Chat_*.json`` directly in that folder is read, never a sub-folder: anything under a
``locomo`` folder is refused (LoCoMo is held out; REALTALK ships a split copy of it in
``data/locomo/``). AIM-Memory runs with its default config (``--set name=value`` overrides a field).

Split: DEV = chats 1-5, TEST = chats 6-10 (``--split dev|test|all``, by the number in the file
name). ``--fit`` grids routing-only config values on the DEV chats together with the synthetic
DEV seeds of ``aim_memory_recall.py`` (``fit`` there; rule: the best mean of text-only and
with-fields recall@5 over both dev sets, each set's mean counted once) and writes
benchmarks/results/aim_memory_fusion_fit.json; it never reads a TEST chat. The defaults in
``apt_ext/memory/config.py`` come from that grid; report them on ``--split test``.

Every turn with text is written as one memory (``clean_text``; speaker as in the chat's ``name``
field, a lower-case name capitalised; the turn's own ``date_time`` as the timestamp), once with
``speaker=``/``timestamp=`` and once as text only, exactly as ``aim_memory_recall.py`` writes;
image-only turns (empty text) are not written, and counted. Evidence references are read
leniently ("D1:11; D3:18", "D12:3-D12:5", "D5:3." and "D 2:18" are the turns they plainly
name; blank entries are ignored); a question with no evidence, with a reference that names no
turn ("D:56", "23:29") or with a turn missing from the chat (the image-only turns REALTALK
removed) is skipped and counted by reason. recall@5 of a question = share of its evidence turns
among the 5 returned (the same ``recall`` as the synthetic benchmark; a question with more than 5
evidence turns cannot reach 1, so the JSON also gives that ceiling); reported overall (mean over
the scored questions), per REALTALK QA category and per chat.

Writes benchmarks/results/aim_memory_realtalk.json (``_<split>`` before ``.json`` for dev or test) and the
plot of the same name in benchmarks/plots/.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aim_memory_recall import (DEV_SEEDS, K, PLOTS, RESULTS, CachedEmbedder, aim_recall,  # noqa: E402
                               baselines, build_memory, fit, load_average)
from memory_dialogues import Dialogue, Question, Turn, generate  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from apt_ext.memory import AIMConfig  # noqa: E402

AIM_METHODS = (("AIM route_memory (text only)", False), ("AIM route_memory (+speaker, time)", True))
FORBIDDEN_DIR = "locomo"
_REF = re.compile(r"D\s*(\d+)\s*:\s*(\d+)(?:\s*-\s*(?:D\s*(\d+)\s*:\s*)?(\d+))?")
_SESSION = re.compile(r"session_(\d+)")
SPLITS = {"dev": range(1, 6), "test": range(6, 11)}
# the fit's grid (routing-only AIMConfig fields; every other field keeps its default)
FIT_GRID = {"lexical_weight": [0.25, 0.5, 1.0, 2.0],
            "min_similarity": [0.0, 0.15, 0.25],
            "anchor_min_similarity": [0.0, 0.15],
            "anchor_boost": [1.0, 2.0],
            "word_anchor_weight": [0.0, 0.25, 1.0],
            "lexical_length_norm": [0.0, 0.3, 0.75]}


def chat_number(path: Path) -> int:
    """The N of ``Chat_N_*.json`` (0 if the name has none)."""
    m = re.match(r"Chat_(\d+)", path.name)
    return int(m.group(1)) if m else 0


def realtalk_files(directory: str | os.PathLike, split: str = "all") -> list[Path]:
    """The ``Chat_*.json`` files directly in ``directory`` (by chat number; those of ``split``:
    "dev", "test" or "all"); ValueError for a path under a ``locomo`` folder (before and after
    resolving links) or a folder without chats."""
    for p in (Path(directory), Path(directory).resolve()):
        if FORBIDDEN_DIR in (part.lower() for part in p.parts):
            raise ValueError(f"refusing {directory}: LoCoMo data ({FORBIDDEN_DIR}/) is held out, pass REALTALK's data/")
    files = [p for p in Path(directory).glob("Chat_*.json") if p.is_file()]
    for p in files:
        if FORBIDDEN_DIR in (part.lower() for part in p.resolve().parts):
            raise ValueError(f"refusing {p}: it links into a {FORBIDDEN_DIR}/ folder")
    if not files:
        raise ValueError(f"no Chat_*.json in {directory} (pass REALTALK's data/ folder)")
    files = sorted(files, key=lambda p: (chat_number(p), p.name))
    return files if split == "all" else [p for p in files if chat_number(p) in SPLITS[split]]


def parse_evidence(refs: list) -> tuple[list[str], bool, bool]:
    """(dia_ids in order, without repeats; False if an entry names no turn; True if an entry was
    not a plain "Dx:y")."""
    out: list[str] = []
    readable, rewritten = True, False
    for ref in refs:
        ref = str(ref)
        if not ref.strip():
            continue
        if re.fullmatch(r"D\d+:\d+", ref) is None:
            rewritten = True
        if _REF.sub("", ref).strip(" ;,.-\t"):  # something left that is not a reference
            readable = False
        for m in _REF.finditer(ref):
            session, first, last_session, last = m.groups()
            if last_session not in (None, session):
                readable = False
                continue
            for y in range(int(first), int(last if last is not None else first) + 1):
                if f"D{session}:{y}" not in out:
                    out.append(f"D{session}:{y}")
    return out, readable and bool(out), rewritten


def speaker_name(raw: str, names: dict) -> str:
    """The chat's ``name`` entry that ``raw`` matches ignoring case, capitalised if all lower case."""
    name = next((n for n in names.values() if n.lower() == raw.lower()), raw)
    return name.title() if name.islower() else name


def load_chat(path: Path, number: int) -> tuple[Dialogue, dict, list[dict]]:
    """A REALTALK chat as a ``Dialogue`` (questions keep the evidence they resolve to), its counts,
    and one record per QA item (index, category, status)."""
    data = json.loads(path.read_text())
    names = data["name"]
    d = Dialogue(seed=number, speakers=tuple(speaker_name(n, names) for n in names.values()))
    turn_of: dict[str, int] = {}
    image_only: set[str] = set()
    sessions = sorted((int(m.group(1)), key) for key in data if (m := _SESSION.fullmatch(key)))
    for session, key in sessions:
        for t in data[key]:
            if not (t.get("clean_text") or "").strip():
                image_only.add(t["dia_id"])
                continue
            when = datetime.datetime.strptime(t["date_time"], "%d.%m.%Y, %H:%M:%S").isoformat()
            turn_of[t["dia_id"]] = len(d.turns)
            d.turns.append(Turn(len(d.turns), session, speaker_name(t["speaker"], names), t["clean_text"], when))
    items = []
    for i, qa in enumerate(data["qa"]):
        ids, readable, rewritten = parse_evidence(qa.get("evidence") or [])
        status = ("no evidence" if not qa.get("evidence") or not any(str(r).strip() for r in qa["evidence"])
                  else "unreadable evidence reference" if not readable
                  else "evidence on an image-only turn" if any(e in image_only for e in ids)
                  else "evidence turn not in the chat" if any(e not in turn_of for e in ids)
                  else "scored")
        items.append({"qa_index": i, "category": qa.get("category"), "status": status,
                      "evidence_rewritten": rewritten, "evidence_turns": len(ids)})
        if status == "scored":
            d.questions.append(Question(qa["question"], [turn_of[e] for e in ids], f"category {qa.get('category')}"))
    counts = {"turns_in_file": len(d.turns) + len(image_only), "turns_written": len(d.turns),
              "image_only_turns_skipped": len(image_only), "qa_items": len(items),
              "questions_scored": len(d.questions)}
    return d, counts, items


def short_answers(mem, d: Dialogue) -> int:
    """Questions for which ``route_memory`` returned fewer than K nodes (none above its floors)."""
    short = 0
    for q in d.questions:
        mem.reset_inertia()
        short += len(mem.route_memory(q.text, k=K)[0]) < K
    return short


def evaluate_chat(d: Dialogue, emb: CachedEmbedder, config: AIMConfig) -> tuple[dict[str, list[float]], dict]:
    """recall@5 per scored question for every method, and what AIM-Memory did with the turns."""
    emb.fill([t.text for t in d.turns] + [f"{t.speaker}: {t.text}" for t in d.turns] + [q.text for q in d.questions])
    scores = baselines(d, emb)
    info: dict = {}
    for label, fields in AIM_METHODS:
        t0 = time.perf_counter()
        mem, node_of = build_memory(d, emb, fields, config)
        t1 = time.perf_counter()
        scores[label] = aim_recall(mem, node_of, d)
        t2 = time.perf_counter()
        kept = [n for n in node_of.values() if n is not None]
        info[label] = {"turns_rejected_by_write_gate": len(node_of) - len(kept), "nodes": len(set(kept)),
                       "questions_answered_with_fewer_than_k": short_answers(mem, d),
                       "write_ms_per_turn": (t1 - t0) * 1e3 / max(len(d.turns), 1),
                       "route_ms_per_question": (t2 - t1) * 1e3 / max(len(d.questions), 1)}
        mem.close()
    return scores, info


def mean_by(rows: list[dict], method: str, key: str, order: list[str]) -> dict[str, float]:
    """Mean recall@5 of ``method`` over the rows of each value of ``key``, in ``order``."""
    return {g: float(np.mean([r["recall@5"][method] for r in rows if r[key] == g])) for g in order}


def run(realtalk_dir: str | os.PathLike, emb: CachedEmbedder, config: AIMConfig | None = None,
        split: str = "all") -> dict:
    """Load every chat of ``split`` in ``realtalk_dir``, score every method; the JSON record's results part."""
    config = config or AIMConfig()
    rows: list[dict] = []
    chats, skipped = {}, {}
    for path in tqdm(realtalk_files(realtalk_dir, split), desc="chats"):
        d, counts, items = load_chat(path, chat_number(path))
        scores, info = evaluate_chat(d, emb, config)
        chat = path.stem
        chats[chat] = {**counts, "speakers": list(d.speakers), "aim": info,
                       "questions_with_evidence_read_leniently": sum(i["evidence_rewritten"] for i in items
                                                                     if i["status"] == "scored")}
        scored = [i for i in items if i["status"] == "scored"]
        for j, (item, q) in enumerate(zip(scored, d.questions)):
            rows.append({"chat": chat, "qa_index": item["qa_index"], "category": q.kind,
                         "evidence_turns": len(q.evidence), "ceiling": min(K, len(q.evidence)) / len(q.evidence),
                         "recall@5": {m: v[j] for m, v in scores.items()}})
        for i in items:
            if i["status"] != "scored":
                skipped.setdefault(i["status"], []).append({"chat": chat, "qa_index": i["qa_index"],
                                                            "category": i["category"]})
    methods = list(rows[0]["recall@5"]) if rows else []
    categories = sorted({r["category"] for r in rows})
    return {
        "split": split, "questions": len(rows), "qa_items": len(rows) + sum(len(v) for v in skipped.values()),
        "questions_skipped": {k: len(v) for k, v in sorted(skipped.items())},
        "questions_by_category": {c: sum(r["category"] == c for r in rows) for c in categories},
        "questions_by_chat": {c: n for c in chats if (n := sum(r["chat"] == c for r in rows))},
        "turns_written": sum(c["turns_written"] for c in chats.values()),
        "image_only_turns_skipped": sum(c["image_only_turns_skipped"] for c in chats.values()),
        "questions_with_evidence_read_leniently": sum(c["questions_with_evidence_read_leniently"]
                                                      for c in chats.values()),
        "aim_questions_answered_with_fewer_than_k": {m: sum(c["aim"][m]["questions_answered_with_fewer_than_k"]
                                                            for c in chats.values()) for m, _ in AIM_METHODS},
        "aim_turns_rejected_by_write_gate": sum(c["aim"][AIM_METHODS[0][0]]["turns_rejected_by_write_gate"]
                                                for c in chats.values()),
        "ceiling_recall@5": float(np.mean([r["ceiling"] for r in rows])) if rows else None,
        "methods": {m: {"recall@5": float(np.mean([r["recall@5"][m] for r in rows])),
                        "by_category": mean_by(rows, m, "category", categories),
                        "by_chat": mean_by(rows, m, "chat", [c for c in chats if any(r["chat"] == c for r in rows)])}
                    for m in methods},
        "chats": chats, "skipped_items": skipped, "per_question": rows}


def plot(result: dict, path: str) -> None:
    """Bars per method: all questions and each category (left), each chat (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = result["methods"]
    panels = [(["all", *result["questions_by_category"]],
               lambda m, g: methods[m]["recall@5"] if g == "all" else methods[m]["by_category"][g],
               lambda g: result["questions"] if g == "all" else result["questions_by_category"][g]),
              (list(result["questions_by_chat"]), lambda m, g: methods[m]["by_chat"][g],
               lambda g: result["questions_by_chat"][g])]
    fig, axes = plt.subplots(1, 2, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 2.2]})
    width = 0.8 / len(methods)
    for ax, (groups, value, count) in zip(axes, panels):
        for i, m in enumerate(methods):
            ax.bar(np.arange(len(groups)) + i * width, [value(m, g) for g in groups], width, label=m)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{g.replace('Chat_', '').replace('_', chr(10), 1).replace('_', ' ')}\n({count(g)} q)" for g in groups], fontsize=7)
        ax.set(ylabel="recall@5", ylim=(0, 1))
    axes[0].axhline(result["ceiling_recall@5"], color="grey", lw=0.8, ls="--")
    axes[0].set_title(f"REALTALK, {result['split']} chats (dashed: the most recall@5 can be)", fontsize=9)
    axes[1].set_title("per chat", fontsize=9)
    axes[1].legend(fontsize=7, ncol=3)
    fig.suptitle(f"AIM-Memory recall@5 on REALTALK (real 21-day chats, {result['questions']} questions)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def config_from(settings: list[str]) -> AIMConfig:
    """AIMConfig() with ``name=value`` overrides (a value of the field's type)."""
    fields = {f.name: f.type for f in dataclasses.fields(AIMConfig)}
    over = {}
    for item in settings:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--set: no AIMConfig field {name!r}")
        over[name] = {"int": int, "float": float}.get(fields[name], str)(value)
    return dataclasses.replace(AIMConfig(), **over)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--realtalk-dir", required=True, help="REALTALK's data/ folder (the Chat_*.json files)")
    parser.add_argument("--split", choices=["all", "dev", "test"], default="all",
                        help="chats 1-5 (dev), 6-10 (test) or all (default)")
    parser.add_argument("--fit", action="store_true",
                        help="grid routing weights on the dev chats + synthetic dev seeds (aim_memory_fusion_fit.json)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an AIMConfig field to override (repeatable)")
    parser.add_argument("--out", default=None, help="JSON to write (default from the split)")
    parser.add_argument("--plot", default=None, help="PNG to write (default from the split)")
    parser.add_argument("--note", default="", help="free text stored in the JSON")
    args = parser.parse_args(argv)
    if args.fit and (args.split != "all" or args.set):
        parser.error("--fit uses the dev chats and the default config: no --split or --set")
    realtalk_files(args.realtalk_dir)  # refuse a wrong folder before loading the model
    config = config_from(args.set)
    stem = "aim_memory_fusion_fit" if args.fit else "aim_memory_realtalk" + ("" if args.split == "all" else f"_{args.split}")
    out = args.out or os.path.join(RESULTS, stem + ".json")
    import torch
    torch.set_num_threads(2)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": f"{platform.node()} {platform.machine()} ({os.cpu_count()} cpus, shared)",
              "load_average_start": load_average(), "python": platform.python_version(),
              "torch": torch.__version__,
              "command": " ".join(["python", "benchmarks/aim_memory_realtalk.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "data": "REALTALK (https://github.com/danny911kr/REALTALK), data/Chat_*.json",
              "embedder": "all-MiniLM-L6-v2 float32 (sentence-transformers)", "k": K,
              "config": json.loads(config.to_json()), "config_set": args.set, "note": args.note}
    emb = CachedEmbedder()
    if args.fit:
        dev = {"REALTALK dev": [load_chat(p, chat_number(p))[0] for p in realtalk_files(args.realtalk_dir, "dev")],
               "synthetic dev": [generate(s) for s in DEV_SEEDS]}
        record.update({"dev_sets": {"REALTALK dev": [p.stem for p in realtalk_files(args.realtalk_dir, "dev")],
                                    "synthetic dev": DEV_SEEDS},
                       "rule": "score = mean over both dev sets of (recall@5 text only, recall@5 with fields), "
                               "each set's mean counted once; the highest score wins",
                       "grid_values": FIT_GRID, "grid": fit(dev, emb, FIT_GRID)})
    else:
        record.update(run(args.realtalk_dir, emb, config, args.split))
    record["load_average_end"] = load_average()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=1)
    if args.fit:
        for row in record["grid"][:10]:
            print(row)
        return 0
    plot_path = args.plot or os.path.join(PLOTS, stem + ".png")
    os.makedirs(os.path.dirname(os.path.abspath(plot_path)), exist_ok=True)
    plot(record, plot_path)
    from render_results import aim_memory_realtalk as render  # the table RESULTS.md shows
    print("\n" + render(os.path.basename(out), record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
