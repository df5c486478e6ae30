"""benchmarks/aim_memory_realtalk.py on a tiny chat in REALTALK's format (a deterministic test
embedder, no model): loading, evidence mapping, every method's recall@5, the skip counts, and the
refusal of anything under a ``locomo`` folder."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_helpers import TokenHashEmbedder

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
QUESTION = "Ann adopted a tiny grey kitten called Pixel from the shelter"


class UnitTokenHash(TokenHashEmbedder):
    """TokenHashEmbedder with unit rows, as MiniLM gives (cosine = dot product)."""

    def __call__(self, texts):
        out = super().__call__(texts)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("aim_memory_realtalk", BENCH / "aim_memory_realtalk.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "aim_memory_realtalk", mod)
    spec.loader.exec_module(mod)
    return mod


def turn(day: int, i: int, speaker: str, text: str, when: str) -> dict:
    return {"clean_text": text, "speaker": speaker, "date_time": when, "img_file": [], "img_url": [],
            "dia_id": f"D{day}:{i}"}


def write_chat(folder: Path, name: str = "Chat_1_Ann_Bob.json") -> Path:
    s1 = ["The weather was awful on the way to work this morning", "My sister is visiting next weekend",
          QUESTION, "We watched a crime series until midnight", "I baked banana bread for the neighbours",
          "", "The train was late again, twenty minutes"]
    s2 = ["I started a pottery class on Tuesday evenings", "Bob booked flights to Lisbon for March",
          "Our landlord finally fixed the heating", "I finished the jigsaw puzzle with a thousand pieces",
          "Lisbon in March should be warm enough for the beach"]
    chat = {"name": {"speaker_1": "Ann", "speaker_2": "bob"},
            "session_1": [turn(1, i + 1, ["Ann", "bob"][i % 2], t, f"02.01.2024, 10:{i:02d}:00")
                          for i, t in enumerate(s1)],
            "session_1_date_time": "02.01.2024, 10:00:00",
            "session_2": [turn(2, i + 1, ["bob", "Ann"][i % 2], t, f"05.01.2024, 18:{i:02d}:00")
                          for i, t in enumerate(s2)],
            "session_2_date_time": "05.01.2024, 18:00:00",
            "qa": [{"question": QUESTION, "answer": "Pixel", "evidence": ["D1:3"], "category": 1},
                   {"question": "Where is Bob flying in March?", "answer": "Lisbon",
                    "evidence": ["D2:2; D2:5", ""], "category": 2},
                   {"question": "What did Ann photograph?", "answer": "?", "evidence": ["D1:6"], "category": 2},
                   {"question": "No evidence here?", "answer": "-", "evidence": [], "category": 3},
                   {"question": "A broken reference?", "answer": "-", "evidence": ["D:56"], "category": 3}]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(chat))
    return path


def test_realtalk_chat_is_loaded_and_scored(bench, tmp_path):
    data = tmp_path / "REALTALK" / "data"
    write_chat(data)
    write_chat(data / "locomo", "Chat_2_Held_Out.json")  # a sub-folder: never read
    d, counts, items = bench.load_chat(data / "Chat_1_Ann_Bob.json", 1)
    assert d.speakers == ("Ann", "Bob") and {t.speaker for t in d.turns} == {"Ann", "Bob"}
    assert counts == {"turns_in_file": 12, "turns_written": 11, "image_only_turns_skipped": 1, "qa_items": 5,
                      "questions_scored": 2}
    assert d.turns[2].text == QUESTION and d.turns[2].timestamp == "2024-01-02T10:02:00"
    assert [q.evidence for q in d.questions] == [[2], [7, 10]]  # "D2:2; D2:5" read as two turns
    assert [i["status"] for i in items] == ["scored", "scored", "evidence on an image-only turn", "no evidence",
                                            "unreadable evidence reference"]

    r = bench.run(data, bench.CachedEmbedder(UnitTokenHash()))
    assert list(r["questions_by_chat"]) == ["Chat_1_Ann_Bob"] and r["questions"] == 2 and r["qa_items"] == 5
    assert r["questions_skipped"] == {"evidence on an image-only turn": 1, "no evidence": 1,
                                      "unreadable evidence reference": 1}
    assert r["image_only_turns_skipped"] == 1 and r["turns_written"] == 11
    assert set(r["methods"]) == {"dense (MiniLM)", "dense (speaker: text)", "BM25", "string match",
                                 "AIM route_memory (text only)", "AIM route_memory (+speaker, time)"}
    for m in r["methods"].values():
        values = [m["recall@5"], *m["by_category"].values(), *m["by_chat"].values()]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert set(m["by_category"]) == {"category 1", "category 2"}
    first = r["per_question"][0]
    assert first["qa_index"] == 0 and first["recall@5"]["dense (MiniLM)"] == 1.0
    bench.plot(r, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_locomo_is_refused(bench, tmp_path):
    locomo = tmp_path / "REALTALK" / "data" / "locomo"
    write_chat(locomo)
    with pytest.raises(ValueError, match="locomo"):
        bench.realtalk_files(locomo)
    with pytest.raises(ValueError, match="locomo"):
        bench.main(["--realtalk-dir", str(locomo), "--out", str(tmp_path / "o.json")])
    link = tmp_path / "innocent"
    link.symlink_to(locomo)
    with pytest.raises(ValueError, match="locomo"):
        bench.realtalk_files(link)
    assert not (tmp_path / "o.json").exists()


def test_dev_test_split_and_fit_on_dev(bench, tmp_path):
    """--split picks chats 1-5 (dev) or 6-10 (test) by the number in the name; the fit routes
    written memories under each grid point, scores both columns per set and sorts by their mean."""
    data = tmp_path / "data"
    for n in (1, 5, 6, 10):
        write_chat(data, f"Chat_{n}_Ann_Bob.json")
    assert [bench.chat_number(p) for p in bench.realtalk_files(data, "dev")] == [1, 5]
    assert [bench.chat_number(p) for p in bench.realtalk_files(data, "test")] == [6, 10]
    assert [bench.chat_number(p) for p in bench.realtalk_files(data)] == [1, 5, 6, 10]
    assert bench.config_from(["lexical_weight=1.5", "top_k=3"]).lexical_weight == 1.5
    with pytest.raises(SystemExit):
        bench.config_from(["no_such_field=1"])
    chat = bench.load_chat(data / "Chat_1_Ann_Bob.json", 1)[0]
    rows = bench.fit({"a": [chat], "b": [chat]}, bench.CachedEmbedder(UnitTokenHash()),
                     {"lexical_weight": [0.0, 1.0], "min_similarity": [0.0, 0.9]})
    assert len(rows) == 4 and [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    for r in rows:
        assert r["score"] == pytest.approx(np.mean([v for s in r["by_set"].values() for v in s.values()]))
    with pytest.raises(ValueError, match="routing-only"):
        bench.fit({"a": [chat]}, bench.CachedEmbedder(UnitTokenHash()), {"write_threshold": [0.5]})
