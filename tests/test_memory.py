"""AIM-Memory scenarios on the real all-MiniLM-L6-v2 embedder (semantics matter here)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from apt_ext.memory import AIMConfig, AIMMemory, MiniLMEmbedder, create_aim_memory

FACTS = [
    "RoPE (rotary position embedding) encodes token positions by rotating query and key vectors.",
    "YaRN extends the RoPE context window of a model by rescaling rotary frequencies.",
    "Llama 4 supports 10M tokens of context.",
]


@pytest.fixture(scope="module")
def minilm():
    """One MiniLM for the module; one torch thread (single sentences on a shared 2-core CPU run
    ~4x faster without thread oversubscription), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    embedder = MiniLMEmbedder()
    embedder(["warm up"])
    yield embedder
    torch.set_num_threads(threads)


@pytest.fixture
def mem(minilm) -> AIMMemory:
    return create_aim_memory(embedder=minilm)


def test_basic_write_and_read(mem):
    node = mem.write_memory("The project codename is Bluebird and it ships in March.")
    assert node is not None and node.proto.shape == (384,) and node.w == 1.0
    nodes, refill = mem.route_memory("What is the project codename?")
    assert [n.id for n in nodes] == [node.id] and refill == []
    assert mem.get(node.id, with_evidence=True).evidence_text.startswith("The project codename")


def test_default_gate_stores_ordinary_facts(mem):
    for fact in ("Paris is the capital of France.", "I like green tea in the morning.",
                 "My sister lives in Berlin.", "我喜欢喝绿茶。"):
        assert mem.write_memory(fact) is not None, fact
    assert len(mem) == 4


def test_unrelated_query_returns_nothing(mem):
    for fact in FACTS + ["Paris is the capital of France.", "My sister lives in Berlin."]:
        mem.write_memory(fact)
    assert mem.route_memory("What is the weather?") == ([], [])
    assert mem.answer("What is the weather?")["num_nodes_recalled"] == 0


def test_inertia_norm_grows_over_related_queries(mem):
    for fact in FACTS + ["Flash attention tiles the attention matrix to save memory.",
                         "Paris is the capital of France."]:
        mem.write_memory(fact)
    norms = []
    for query in ("How does RoPE encode positions?", "What does YaRN do to RoPE?",
                  "How are rotary frequencies rescaled?", "rotary position embedding context window"):
        nodes, _ = mem.route_memory(query)
        assert nodes
        norms.append(mem.inertia_norm())
    assert all(b > a for a, b in zip(norms, norms[1:])), norms
    mem.reset_inertia()
    assert mem.inertia_norm() == 0.0


@pytest.mark.parametrize("query", ["which model has 10M tokens context", "10M tokens 的模型是哪个？"])
def test_anchor_query_prefers_the_node_with_the_anchor(mem, query):
    ids = [mem.write_memory(f).id for f in FACTS]
    mem.write_memory("Llama 3 supports 128K tokens of context.")
    nodes, _ = mem.route_memory(query)
    assert nodes[0].id == ids[2], [n.summary for n in nodes]


def test_anchor_case_in_chinese_memories(mem):
    mem.write_memory("RoPE 是一种旋转位置编码，通过旋转查询和键向量来编码位置。")
    mem.write_memory("YaRN 通过重新缩放旋转频率来扩展 RoPE 的上下文窗口。")
    llama = mem.write_memory("Llama 4 支持 10M tokens 的上下文。")
    mem.write_memory("Llama 3 支持 128K tokens 的上下文。")
    for query in ("10M tokens 的模型是哪个？", "which model has 10M tokens context"):
        assert mem.route_memory(query)[0][0].id == llama.id


def test_strict_mode_from_keywords(mem):
    evidence = "RoPE was introduced in RoFormer (Su et al., 2021); it multiplies q and k by rotation matrices."
    node = mem.write_memory("RoPE is a rotary position embedding.", evidence=evidence)
    for query in ("What exactly is RoPE?", "RoPE 的原文定义是什么？", "给我 RoPE 的具体定义"):
        nodes, refill = mem.route_memory(query, mode="auto")
        assert nodes[0].id == node.id and refill == [evidence] and nodes[0].evidence_text == evidence
    nodes, refill = mem.route_memory("What is RoPE?", mode="auto")
    assert nodes[0].id == node.id and refill == [] and nodes[0].evidence_text is None
    assert mem.route_memory("What is RoPE?", mode="strict")[1] == [evidence]


def test_answer(mem):
    for fact in FACTS:
        mem.write_memory(fact)
    out = mem.answer("Which model has a 10M token context?")
    assert out["mode"] == "fast" and out["num_nodes_recalled"] >= 1
    assert out["nodes"][0]["summary"].startswith("Llama 4") and "Llama 4" in out["context"]
    assert out["answer"] is None
    strict = mem.answer("Quote exactly what we know about YaRN", generator=lambda p: f"LLM saw {len(p)}")
    assert strict["mode"] == "strict" and "Evidence:" in strict["context"]
    assert strict["answer"].startswith("LLM saw") and "YaRN" in strict["prompt"]
    assert mem.answer("Which model has a 10M token context?", auto_mode=False)["mode"] == "fast"


def test_save_load_round_trip(mem, minilm, tmp_path):
    for fact in FACTS:
        mem.write_memory(fact)
    mem.write_memory("Bob prefers window seats.", namespace="bob")
    before = [(n.id, n.summary, round(n.w, 6)) for n in mem.nodes()]
    path = tmp_path / "saved.db"
    mem.save(str(path))
    loaded = AIMMemory.load(str(path), embedder=minilm)
    assert [(n.id, n.summary, round(n.w, 6)) for n in loaded.nodes()] == before
    assert loaded.namespaces() == ["bob", "default"]
    assert loaded.route_memory("which model has 10M tokens context")[0][0].summary.startswith("Llama 4")
    assert loaded.route_memory("Where does Bob like to sit?", namespace="bob")[0][0].summary.startswith("Bob")
    with pytest.raises(FileNotFoundError):
        AIMMemory.load(str(tmp_path / "missing.db"), embedder=minilm)


def test_multi_turn_conversation(mem):
    turns = ["Hi! My name is Dana and I work as a nurse.", "My dog is called Rex, he is a beagle.",
             "I am allergic to peanuts.", "ok", "thanks!", "Next month I am flying to Tokyo for a conference.",
             "My favourite programming language is Rust."]
    stored = [mem.write_memory(t, namespace="dana") for t in turns]
    assert stored[3] is None and stored[4] is None
    asks = {"What is my dog's name?": "Rex", "What food should I avoid?": "peanuts",
            "Where am I travelling next month?": "Tokyo", "What is my job?": "nurse",
            "Which language do I like to code in?": "Rust"}
    for query, expect in asks.items():
        nodes, _ = mem.route_memory(query, namespace="dana", k=3)
        assert nodes and expect in nodes[0].summary, (query, [n.summary for n in nodes])


def test_stats(mem):
    for fact in FACTS:
        mem.write_memory(fact)
    mem.write_memory("ok")
    mem.write_memory("Llama 4 supports 10M tokens of context!")
    mem.route_memory("which model has 10M tokens context")
    stats = mem.stats()
    assert stats["embedder"] == "all-MiniLM-L6-v2" and stats["dim"] == 384
    assert stats["total_nodes"] == 3 and stats["rejected"] == 1 and stats["merges"] == 1
    assert stats["namespaces"]["default"]["writes"] == 4 and stats["routes"] == 1
    assert stats["mean_scanned_per_route"] > 0


def _anchor_pairs():
    products = ["Falcon", "Orion", "Nimbus", "Atlas", "Vega", "Zephyr", "Helix", "Cobalt", "Quasar", "Lynx",
                "Aurora", "Borealis", "Cypress", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper"]
    people = [("Alice", "Bob"), ("Carlos", "Dmitri"), ("Emma", "Farah"), ("Grace", "Hiro"), ("Ines", "Jonas")]
    pairs = []
    for i, p in enumerate(products):
        a, b = 16 * (i + 1), 16 * (i + 2)
        pairs.append((f"The {p} server has {a}GB of memory.", f"The {p} server has {b}GB of memory.",
                      f"Which {p} server has {a}GB of memory?", f"Which {p} server has {b}GB of memory?"))
        va, vb = f"v{i + 1}.2", f"v{i + 1}.3"
        pairs.append((f"{p} {va} added streaming support.", f"{p} {vb} added streaming support.",
                      f"What did {p} {va} add?", f"What did {p} {vb} add?"))
        pairs.append((f"{p} 2 was released with a {a}K context window.",
                      f"{p} 3 was released with a {a}K context window.",
                      f"context window of {p} 2", f"context window of {p} 3"))
        pairs.append((f"The {p} launch review is on 2026-0{i % 9 + 1}-1{i % 9}.",
                      f"The {p} launch review is on 2026-0{i % 9 + 1}-2{i % 9}.",
                      f"What happens on 2026-0{i % 9 + 1}-1{i % 9}?",
                      f"What happens on 2026-0{i % 9 + 1}-2{i % 9}?"))
        pairs.append((f"{p} revenue grew {i + 2}.5% last quarter.", f"{p} revenue grew {i + 12}.5% last quarter.",
                      f"whose revenue grew {i + 2}.5%?", f"whose revenue grew {i + 12}.5%?"))
        pairs.append((f"{p} 模型支持 {a}K tokens 的上下文。", f"{p} 模型支持 {b}K tokens 的上下文。",
                      f"支持 {a}K tokens 的 {p} 模型", f"支持 {b}K tokens 的 {p} 模型"))
        for x, y in people:
            pairs.append((f"{x} leads the {p} team.", f"{y} leads the {p} team.",
                          f"Which team does {x} lead?", f"Which team does {y} lead?"))
    pairs += [(f"The {p} office is in building {n}A.", f"The {p} office is in building {n}B.",
               f"where is building {n}A", f"where is building {n}B") for n, p in enumerate(products[:4])]
    return pairs


def test_near_duplicate_pairs_differing_in_one_anchor(mem):
    pairs = _anchor_pairs()
    assert len(pairs) >= 200
    right = 0
    for n, (text_a, text_b, query_a, query_b) in enumerate(pairs):
        ns = f"pair{n}"
        a = mem.write_memory(text_a, namespace=ns)
        b = mem.write_memory(text_b, namespace=ns)
        assert a.id != b.id, (text_a, text_b)  # different anchors: never merged
        for query, want in ((query_a, a.id), (query_b, b.id)):
            nodes, _ = mem.route_memory(query, namespace=ns, k=2)
            right += bool(nodes) and nodes[0].id == want
    assert right / (2 * len(pairs)) >= 0.95, right / (2 * len(pairs))


def test_cli_round_trip(tmp_path, capsys):
    from apt_ext.cli.main import main

    db = str(tmp_path / "cli.db")
    assert main(["memory", "add", "Llama 4 supports 10M tokens of context.", "--db", db, "--ns", "u1"]) == 0
    assert main(["memory", "add", "ok", "--db", db, "--ns", "u1"]) == 0
    assert main(["memory", "search", "which model has 10M tokens context", "--db", db, "--ns", "u1"]) == 0
    out = capsys.readouterr().out
    assert "stored #1" in out and "rejected" in out and "1. #1" in out
    export = str(tmp_path / "u1.jsonl")
    assert main(["memory", "export", "--db", db, "--ns", "u1", "-o", export]) == 0
    assert main(["memory", "import", export, "--db", db, "--ns", "u2"]) == 0
    assert main(["memory", "answer", "10M tokens 的模型是哪个？", "--db", db, "--ns", "u2"]) == 0
    answer = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert answer["num_nodes_recalled"] == 1 and answer["nodes"][0]["namespace"] == "u2"
    assert main(["memory", "stats", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["total_nodes"] == 2
    assert main(["memory", "add", "", "--db", db]) == 2


def test_speaker_and_time_fields_steer_recall(mem):
    said = {}
    for day, (speaker, text) in enumerate([("Maria", "We adopted a grey kitten from the shelter last weekend."),
                                           ("Tom", "We adopted a black puppy from the shelter last weekend."),
                                           ("Maria", "I ran the city 10K in 48:12, a personal best."),
                                           ("Tom", "I ran the city 10K in 51:40, slower than last year.")]):
        node = mem.write_memory(text, speaker=speaker, timestamp=f"2023-05-0{day + 1}T18:00:00")
        assert node.speaker == speaker and node.timestamp is not None
        said[(speaker, day)] = node.id
    assert mem.route_memory("Which pet did Tom get?", k=1)[0][0].id == said[("Tom", 1)]
    assert mem.route_memory("What was Maria's race time?", k=1)[0][0].id == said[("Maria", 2)]
    assert mem.route_memory("Who adopted an animal on 1 May 2023?", k=1)[0][0].id == said[("Maria", 0)]
    assert mem.route_memory("What did Tom say on May 4th?", k=1)[0][0].id == said[("Tom", 3)]
    with pytest.raises(TypeError, match="speaker"):
        mem.write_memory("A perfectly ordinary fact about cats.", speaker=3)
    with pytest.raises(ValueError, match="timestamp"):
        mem.write_memory("A perfectly ordinary fact about cats.", timestamp="yesterday-ish")


def test_lexical_channel_finds_a_rare_word_dense_ranks_low(minilm):
    facts = ["The boiler in the basement was serviced in March.", "The basement light switch is behind the door.",
             "We store the bikes in the basement.", "The basement floods when it rains heavily.",
             "The basement window does not close properly when it rains.", "Our basement smells damp after rain."]
    target = "Remember that the zorbulent valve leaks."
    results = {}
    for weight in (0.0, 0.25):
        mem = create_aim_memory(AIMConfig(lexical_weight=weight, anchor_boost=0.0), embedder=minilm)
        for fact in facts + [target]:
            mem.write_memory(fact)
        nodes, _ = mem.route_memory("does the zorbulent leak in the basement when it rains?", k=1)
        results[weight] = nodes[0].summary
    assert results == {0.0: facts[3], 0.25: target}  # the lexical channel is what finds it


def test_onnx_int8_embedder_agrees_with_the_float32_model(minilm):
    from apt_ext.memory import OnnxMiniLMEmbedder
    sentences = [fact for fact in FACTS] + ["Maria paid $1,150 for the new sofa on 7 May 2023.",
                                            "我喜欢喝绿茶。", "What is the name of Tom's dog?",
                                            "The staging server runs on port 8080 behind nginx 1.25."]
    ref = minilm(sentences)
    fast = OnnxMiniLMEmbedder()(sentences)
    cos = (ref * fast).sum(axis=1)
    assert fast.shape == (len(sentences), 384) and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, cos


def test_onnx_embedder_runs_a_given_onnx_file_and_checks_its_arguments(tmp_path):
    from apt_ext.memory import OnnxMiniLMEmbedder
    from apt_ext.memory.onnx_embedder import int8_file_name, quantize_int8
    fp32 = OnnxMiniLMEmbedder(quantized=False)
    texts = ["Maria paid $1,150 for the sofa.", "我喜欢喝绿茶。"]
    assert np.array_equal(OnnxMiniLMEmbedder(quantized=False, onnx_file=fp32.model_path())(texts), fp32(texts))
    assert OnnxMiniLMEmbedder().model_path().name == int8_file_name() == "model_int8_fp32ffn0.onnx"
    with pytest.raises(FileNotFoundError, match="onnx_file"):
        OnnxMiniLMEmbedder(onnx_file=tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="fp32_ffn_out_layers"):
        quantize_int8(fp32.model_path(), tmp_path / "x.onnx", (6,))
    assert not (tmp_path / "x.onnx").exists()
