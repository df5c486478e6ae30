"""AIM-Memory keeps the user's text exactly: summaries are copies of the leading sentences (never
rewritten), and every stored and returned string (summary, evidence, refill, answer context,
export, speaker) comes back character for character, from both stores and after reopening."""
from __future__ import annotations

import io
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_helpers import TokenHashEmbedder

from apt_ext.memory import AIMConfig, create_aim_memory
from apt_ext.memory.summary import sentence_ends, summarize

ISSUE_CASES = ["The model was trained on 3.5 trillion tokens.", "We upgraded to Python 3.10 last week.",
               "The round raised $5.1M from two funds.", "Build 2.14.1 fixed the crash.",
               "模型在 3.5 万亿个词元上训练。Python 3.10 已发布。", "See https://example.com/a/b.c?x=1.2#top for v2.0.1 notes."]


@pytest.mark.parametrize("text", ISSUE_CASES)
def test_summary_of_the_issue_cases_is_the_text(text):
    assert summarize(text, 160) == text


@pytest.mark.parametrize("text,first", [
    ("Hi! My name is Dana and I work as a nurse. I also like tea a lot.",
     "Hi! My name is Dana and I work as a nurse."),
    ("Dr. Smith moved the meeting to 3 p.m. on Friday, e.g. after lunch. Bring the U.S. report, please.",
     "Dr. Smith moved the meeting to 3 p.m. on Friday, e.g. after lunch."),
    ("我们的预算是 5.1 万元，比去年多 3.5%。下个月开始执行新的方案，请大家提前准备好材料和文档。",
     "我们的预算是 5.1 万元，比去年多 3.5%。下个月开始执行新的方案，请大家提前准备好材料和文档。"),
    ("Version 2.14.1 shipped on 2026-01-21 with a 3.5x speed-up. The next one is 2.15.0 in March.",
     "Version 2.14.1 shipped on 2026-01-21 with a 3.5x speed-up."),
    ("  Leading spaces stay out, the line stays exact: 4.5 km run.\nSecond line here.",
     "Leading spaces stay out, the line stays exact: 4.5 km run."),
])
def test_summary_is_the_leading_sentences_copied(text, first):
    assert summarize(text, 160) == first


def test_long_summary_is_cut_with_an_ellipsis_only():
    text = "word " * 100 + "3.14159 end."
    out = summarize(text, 50)
    assert out.endswith("…") and len(out) <= 50 and text.startswith(out[:-1])


def test_sentence_ends_skip_decimals_urls_and_abbreviations():
    text = "Pay $5.10 at https://x.io/a.b now. Mr. Lee said 3.5. Done!"
    ends = sentence_ends(text)
    assert [text[:e] for e in ends] == ["Pay $5.10 at https://x.io/a.b now.",
                                        "Pay $5.10 at https://x.io/a.b now. Mr. Lee said 3.5.", text]


# -- property test: random facts from the hard parts of real text ---------------------------------
_number = st.one_of(st.integers(0, 10**9).map(str),
                    st.tuples(st.integers(0, 9999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}"),
                    st.integers(1000, 10**7).map(lambda n: f"{n:,}"))
_version = st.lists(st.integers(0, 40), min_size=2, max_size=4).map(lambda v: ".".join(map(str, v)))
_unit = st.sampled_from(["trillion tokens", "%", "ms", "GB", "km/h", "°C", "x", "K", "M", "万", "亿"])
_currency = st.tuples(st.sampled_from(["$", "€", "¥", "£", "US$"]), _number,
                      st.sampled_from(["", "M", "bn", "k"])).map("".join)
_url = st.tuples(st.sampled_from(["https://", "http://", "ftp://"]),
                 st.from_regex(r"[a-z]{1,8}(\.[a-z]{2,5}){1,2}", fullmatch=True),
                 st.from_regex(r"(/[A-Za-z0-9._~-]{1,8}){0,3}(\?[a-z]=[0-9.]{1,6})?", fullmatch=True)).map("".join)
_dotted_date = st.tuples(st.integers(0, 40), st.sampled_from(["{:d}", "{:02d}"]), st.integers(0, 14),
                         st.integers(1990, 2030)).map(  # "19.01.2024", "1.2.2024", "45.13.2024"
    lambda t: f"{t[0]}.{t[1].format(t[2])}.{t[3]}")
_abbrev = st.sampled_from(["Dr.", "e.g.", "i.e.", "U.S.", "Mr.", "vs.", "etc.", "a.m.", "No."])
_cjk = st.text(st.sampled_from(list("模型训练数据版本发布价格万亿元我们的会议在下午三点开始。，；！？「」《》、")),
               min_size=1, max_size=20)
_word = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
_part = st.one_of(st.tuples(_number, st.sampled_from(["", " "]), _unit).map("".join),
                  _version.map(lambda v: f"v{v}"), _version.map(lambda v: f"Python {v}"), _currency,
                  _url, _abbrev, _dotted_date, _cjk, _word, st.sampled_from([".", "!", "?", "。", "…", ";", "\n", "  "]))
_fact = st.lists(_part, min_size=1, max_size=14).map(" ".join).filter(lambda t: t.strip() and "\x00" not in t)
_speaker = st.one_of(st.none(), st.sampled_from(["Maria", "李雷", "Dr. O'Neil", "Zoë"]))
_namespace_counter = itertools.count()


def _exact_summary(summary: str, text: str) -> bool:
    body = text.lstrip()
    return body.startswith(summary) or (summary.endswith("…") and body.startswith(summary[:-1]))


@pytest.fixture(scope="module")
def memories(tmp_path_factory, request):
    """One memory per store for the whole property test (a namespace per example)."""
    out = {"sqlite": str(tmp_path_factory.mktemp("exact") / "exact.db")}
    try:
        out["postgres"] = request.getfixturevalue("postgres_databases").new()
    except pytest.skip.Exception:
        pass
    config = AIMConfig(write_threshold=0.0, summary_chars=120)  # store everything, cut some summaries
    return {name: create_aim_memory(config, path=path, embedder=TokenHashEmbedder())
            for name, path in out.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_fact, speaker=_speaker, evidence=st.one_of(st.none(), _fact))
def test_every_stored_and_returned_string_is_exact(memories, text, speaker, evidence):
    namespace = f"ns{next(_namespace_counter)}"
    for name, mem in memories.items():
        node = mem.write_memory(text, namespace=namespace, evidence=evidence, speaker=speaker,
                                timestamp="2026-03-02T10:00:00")
        full = text if evidence is None else evidence
        assert _exact_summary(node.summary, text), (name, text, node.summary)
        assert node.speaker == speaker
        got = mem.get(node.id, with_evidence=True)
        assert got.evidence_text == full and got.summary == node.summary
        nodes, refill = mem.route_memory(text, mode="strict", namespace=namespace, k=1)
        assert nodes[0].id == node.id and refill == [full] and nodes[0].summary == node.summary
        out = mem.answer(text, mode="strict", namespace=namespace, k=1)
        assert f"[1] {node.summary}" in out["context"] and full in out["context"]
        assert text in out["prompt"] and out["refill_texts"] == [full]
        buf = io.StringIO()
        mem.export_jsonl(buf, namespace=namespace)
        record = json.loads(buf.getvalue())
        assert record["evidence"] == full and record["summary"] == node.summary
        assert record["speaker"] == speaker


def test_reopened_stores_return_the_same_strings(store_path):
    texts = ISSUE_CASES + ["Dr. Müller paid €1,299.99 (≈ US$1.4k) on 2026-03-02 — see https://shop.example/o/77.12",
                           "预算：¥3.5万；版本 v2.14.1。下周三开会！"]
    mem = create_aim_memory(AIMConfig(write_threshold=0.0), path=store_path, embedder=TokenHashEmbedder())
    written = {mem.write_memory(t, speaker="李雷").id: t for t in texts}
    mem.close()
    again = create_aim_memory(path=store_path, embedder=TokenHashEmbedder())
    for node_id, text in written.items():
        node = again.get(node_id, with_evidence=True)
        assert node.evidence_text == text and node.summary == summarize(text, 160) and node.speaker == "李雷"
    again.close()


def test_nul_characters_are_refused_by_both_stores():
    mem = create_aim_memory(embedder=TokenHashEmbedder())
    with pytest.raises(ValueError, match="NUL"):
        mem.write_memory("a fact with a \x00 inside")
