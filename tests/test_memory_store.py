"""AIM-Memory storage, concurrency, index and input-validation tests.

Semantics do not matter here, so a deterministic token-hash embedder stands in for MiniLM
(test-only; the library's default is the real all-MiniLM-L6-v2). The storage and concurrency
tests run against both stores (``store_path``: a SQLite file and a PostgreSQL database)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from memory_helpers import TokenHashEmbedder

import apt_ext.memory.memory as memory_module
from apt_ext.memory import AIMConfig, AIMMemory, ClusterIndex, create_aim_memory
from apt_ext.memory.stores.base import NODE_COLUMNS, NodeRow

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)


def _mem(path=None, **cfg):
    return create_aim_memory(AIMConfig(**cfg) if cfg else None, path=path, embedder=TokenHashEmbedder())


def test_weights_decay_by_gamma_per_write(store_path):
    mem = _mem(store_path)
    first = mem.write_memory("Alpha project deadline is Friday 2026-02-06")
    assert first.w == pytest.approx(1.0)
    for i in range(5):
        assert mem.write_memory(f"unrelated fact number {i} about topic {i * 7} zebra{i}") is not None
    weights = {n.id: n.w for n in mem.nodes()}
    assert weights[first.id] == pytest.approx(0.8 ** 5, abs=1e-6)
    assert round(weights[first.id], 3) == 0.328
    assert mem.stats()["namespaces"]["default"]["writes"] == 6


def test_namespaces_never_leak(store_path):
    mem = _mem(store_path)
    a = mem.write_memory("Alice's locker code is 4417", namespace="alice")
    b = mem.write_memory("Bob's locker code is 9921", namespace="bob")
    nodes, _ = mem.route_memory("Alice's locker code is 4417", namespace="bob", k=10)
    assert [n.id for n in nodes] == [b.id] or nodes == [] or all(n.namespace == "bob" for n in nodes)
    nodes, _ = mem.route_memory("Alice's locker code is 4417", namespace="alice", k=10)
    assert [n.id for n in nodes] == [a.id]
    assert mem.route_memory("Alice's locker code is 4417", namespace="carol") == ([], [])
    assert mem.namespaces() == ["alice", "bob"]
    assert [n.id for n in mem.nodes("bob")] == [b.id]
    assert mem.clear_namespace("alice") == 1
    assert mem.namespaces() == ["bob"]
    mem.close()
    again = _mem(store_path)
    assert again.namespaces() == ["bob"] and len(again) == 1


def test_delete_and_update(store_path):
    mem = _mem(store_path)
    node = mem.write_memory("The staging server runs on port 8080")
    other = mem.write_memory("The build cache lives on volume vol-77")
    updated = mem.update(node.id, text="The staging server runs on port 9090")
    assert "9090" in updated.summary and "9090" in updated.fields["anchors"]
    nodes, refill = mem.route_memory("staging server port 9090", mode="strict")
    assert nodes[0].id == node.id and "9090" in refill[0]
    assert mem.delete(node.id) is True and mem.delete(node.id) is False
    assert all(n.id != node.id for n in mem.route_memory("staging server port 9090", k=10)[0])
    assert mem.get(other.id) is not None and mem.get(node.id) is None
    with pytest.raises(KeyError):
        mem.update(node.id, text="gone node text here")


@pytest.mark.parametrize("text,exc", [("", ValueError), ("   \n", ValueError), (None, TypeError),
                                      (b"bytes text", TypeError), ("x" * 1_000_000, ValueError)])
def test_bad_text_is_rejected(text, exc):
    mem = _mem()
    with pytest.raises(exc, match="text"):
        mem.write_memory(text)
    assert len(mem) == 0


@pytest.mark.parametrize("namespace,exc", [("", ValueError), ("a b", ValueError), ("../etc", ValueError),
                                           ("x" * 65, ValueError), (7, TypeError), (None, TypeError)])
def test_bad_namespace_is_rejected(namespace, exc):
    mem = _mem()
    with pytest.raises(exc, match="namespace"):
        mem.write_memory("a perfectly ordinary fact about cats", namespace=namespace)
    with pytest.raises(exc, match="namespace"):
        mem.route_memory("cats", namespace=namespace)


def test_bad_embedder_output_is_a_clear_error():
    nan = create_aim_memory(embedder=lambda texts: np.full((len(texts), 8), np.nan, np.float32))
    with pytest.raises(RuntimeError, match="NaN"):
        nan.write_memory("a perfectly ordinary fact about cats")
    assert len(nan) == 0
    dims = iter([8, 5])
    wrong = create_aim_memory(embedder=lambda texts: np.ones((len(texts), next(dims)), np.float32))
    assert wrong.write_memory("a perfectly ordinary fact about cats") is not None
    with pytest.raises(RuntimeError, match="dimension 5"):
        wrong.write_memory("another ordinary fact about dogs")
    assert len(wrong) == 1
    rows = create_aim_memory(embedder=lambda texts: np.ones((len(texts) + 1, 8), np.float32))
    with pytest.raises(RuntimeError, match="shape"):
        rows.write_memory("a perfectly ordinary fact about cats")
    with pytest.raises(TypeError, match="embedder"):
        create_aim_memory(embedder="minilm")


def test_bad_arguments():
    mem = _mem()
    mem.write_memory("The office wifi password is hunter2")
    with pytest.raises(ValueError, match="mode"):
        mem.route_memory("wifi", mode="slow")
    with pytest.raises(ValueError, match="k must"):
        mem.route_memory("wifi", k=0)
    with pytest.raises(ValueError, match="write_threshold"):
        AIMConfig(write_threshold=1.5)
    with pytest.raises(ValueError, match="cluster_size"):
        AIMConfig(cluster_size=0)
    with pytest.raises(TypeError, match="config"):
        create_aim_memory(config={"top_k": 3})


def test_write_gate_and_merge(store_path):
    mem = _mem(store_path)
    assert mem.write_memory("ok") is None and mem.write_memory("thanks!") is None
    assert mem.write_memory("好的") is None
    first = mem.write_memory("The quarterly report is due on 2026-03-31")
    again = mem.write_memory("the quarterly report is due on 2026-03-31")
    assert again.id == first.id and again.fields["merged"] == 1
    other = mem.write_memory("The quarterly report is due on 2026-06-30")
    assert other.id != first.id
    assert mem.stats()["rejected"] == 3 and mem.stats()["merges"] == 1 and len(mem) == 2


def test_cluster_index_matches_brute_force_through_growth_and_removal():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((40, 32))
    x = centers[rng.integers(0, 40, 6000)] + 0.4 * rng.standard_normal((6000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = ClusterIndex(32, cluster_size=64, n_probe=12, hot_window=16)
    for start in range(0, 6000, 500):
        index.add(np.arange(start, start + 500), x[start:start + 500])
    assert index.n_clusters > 20 and len(index) == 6000
    index.remove(list(range(0, 6000, 3)))
    alive = np.array([i for i in range(6000) if i % 3])
    queries = x[rng.integers(0, 6000, 50)]
    recall = []
    for q in queries:
        ids, sims, scanned = index.search(q, 10)
        assert not any(i % 3 == 0 for i in ids)
        assert np.all(np.diff(sims) <= 1e-6) and scanned < len(index)
        exact = alive[np.argsort(-(x[alive] @ q))[:10]]
        recall.append(len(set(ids.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recall) >= 0.9



def test_cluster_index_vectors_and_hot_window_search_through_adds_replaces_removes_and_splits():
    rng = np.random.default_rng(2)

    def unit(m):
        v = rng.standard_normal((m, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    index = ClusterIndex(16, cluster_size=8, n_probe=4, hot_window=32)
    truth: dict[int, np.ndarray] = {}
    for step in range(30):  # adds, replaces of live ids, removes: splits and rebuilds happen on the way
        ids = rng.choice(400, 25, replace=False)
        vecs = unit(25)
        index.add(ids, vecs)
        truth.update(zip(ids.tolist(), vecs))
        gone = rng.choice(400, 5, replace=False).tolist()
        index.remove(gone)
        for i in gone:
            truth.pop(i, None)
    live = sorted(truth)
    assert len(index) == len(live) and index.n_clusters > 4
    np.testing.assert_array_equal(index.vectors(live), np.stack([truth[i] for i in live]))
    np.testing.assert_array_equal(index.vector(live[0]), truth[live[0]])
    with pytest.raises(KeyError):
        index.vectors([next(i for i in range(400) if i not in truth)])
    matrix = np.stack([truth[i] for i in live])
    for q in unit(20):  # every cluster probed: the search is exact, hot-window copies counted once
        ids, sims, _ = index.search(q, 12, n_probe=index.n_clusters)
        exact = np.argsort(-(matrix @ q), kind="stable")[:12]
        assert len(set(ids.tolist())) == len(ids) == 12
        np.testing.assert_allclose(sims, (matrix @ q)[exact], rtol=0, atol=1e-5)
        np.testing.assert_allclose(sims, index.vectors(ids.tolist()) @ q, rtol=0, atol=1e-5)


def test_cluster_index_build_balances_centroids_and_members():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    small = ClusterIndex(8, cluster_size=100, n_probe=2)
    small.build(np.arange(5000), x)  # sqrt(5000 / 2) = 50 < 100: cluster_size decides
    assert small.build_cluster_size == 100 and small.n_clusters <= 50
    wide = ClusterIndex(8, cluster_size=4, n_probe=2)
    wide.build(np.arange(5000), x)  # sqrt(5000 / 2) = 50 > 4: 100 clusters, not 1250
    assert wide.build_cluster_size == 50 and 50 <= wide.n_clusters <= 100


def _node_rows(mem) -> list[tuple]:
    """Every stored node (id and seq relative to the first node) with its evidence."""
    rows = [NodeRow.from_sql(r) for r in mem._store.execute(f"SELECT {NODE_COLUMNS} FROM nodes ORDER BY id")]
    evidence = mem._store.evidence([r.id for r in rows])
    id0, seq0 = rows[0].id, rows[0].seq
    return [(r.id - id0, r.namespace, r.summary, r.anchors, r.fields, r.links, r.w, r.stamp,
             r.proto.tobytes(), r.created_at, r.seq - seq0, r.speaker, r.ts, evidence[r.id]) for r in rows]


def test_import_records_in_batches_stores_what_one_by_one_imports_store(store_path, monkeypatch):
    monkeypatch.setattr(memory_module, "_INSERT_BATCH", 3)  # several batches and a partial last one
    embed = TokenHashEmbedder()
    texts = [f"Item {i} of the inventory costs {i * 3}.5 USD since 2024-0{1 + i % 9}-1{i % 10}" for i in range(11)]
    records = [{"namespace": "left" if i % 3 else "right", "evidence": text, "embedder": embed.name,
                "proto": embed([text])[0] / np.linalg.norm(embed([text])[0]), "created_at": 1000.0 + i,
                "speaker": "Ann" if i % 2 else None, "timestamp": 1.7e9 + 86400 * i}
               for i, text in enumerate(texts)]
    bulk, single = _mem(store_path), _mem()
    for mem in (bulk, single):  # an earlier write: the import continues its counters
        mem.write_memory("The first note mentions the Zephyr project", namespace="left")
    assert bulk.import_records(records) == 11
    for rec in records:
        single.import_records([rec])
    assert _node_rows(bulk)[1:] == _node_rows(single)[1:]  # (the first node's created_at is the clock's)
    for name in ("left", "right"):
        assert bulk.stats(name)["namespaces"][name]["writes"] == single.stats(name)["namespaces"][name]["writes"]
        assert [n.id - bulk.nodes("left")[0].id for n in bulk.nodes(name)] == \
            [n.id - single.nodes("left")[0].id for n in single.nodes(name)]
    query = "what does item 4 of the inventory cost"
    assert [n.summary for n in bulk.route_memory(query, namespace="left")[0]] == \
        [n.summary for n in single.route_memory(query, namespace="left")[0]]


def test_node_vectors_follow_writes_updates_deletes_and_namespaces(store_path):
    mem = _mem(store_path)
    ids = [mem.write_memory(f"Server rack {i} sits in room {100 + i} of building B{i % 3}",
                            namespace=f"site{i % 2}").id for i in range(12)]
    mem.update(ids[3], text="Server rack 3 moved to room 340 of the annex")
    mem.delete(ids[5])
    mem.clear_namespace("site0")
    mem.write_memory("Server rack 12 sits in room 512 of building B0", namespace="site0")
    reopened = _mem(store_path)  # a second reader builds its index from the change sequence
    for memory in (mem, reopened):
        stored = {r.id: r.proto for r in (NodeRow.from_sql(t) for t in memory._store.execute(
            f"SELECT {NODE_COLUMNS} FROM nodes"))}
        seen = [n for name in ("site0", "site1") for n in memory.nodes(name)]
        assert sorted(n.id for n in seen) == sorted(stored)
        for node in seen:
            np.testing.assert_array_equal(node.proto, stored[node.id])
        routed, _ = memory.route_memory("Server rack 3 moved to room 340 of the annex", namespace="site1", k=3)
        assert routed[0].id == ids[3]
        np.testing.assert_array_equal(routed[0].proto, stored[ids[3]])


def _write_from_threads(mem, n_threads: int, count: int) -> list[Exception]:
    """Each of ``n_threads`` threads writes ``count`` distinct facts; returns the errors raised."""
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(count):
                assert mem.write_memory(f"thread {t} wrote item {i} code T{t}x{i}") is not None
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def test_threads_write_concurrently_without_loss(store_path):
    path = store_path
    mem = _mem(path)
    assert _write_from_threads(mem, 4, 40) == []
    assert len(mem) == 160
    mem.close()
    assert len(_mem(path)) == 160


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
    from memory_helpers import TokenHashEmbedder
    from apt_ext.memory import create_aim_memory
    mem = create_aim_memory(path={path!r}, embedder=TokenHashEmbedder())
    tag, count, namespace = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    for i in range(count):
        node = mem.write_memory(f"process {{tag}} wrote item {{i}} code P{{tag}}x{{i}}", namespace=namespace)
        print(node.id, i, flush=True)
""")


def _writer(path: str, tag: str, count: int, namespace: str = "default") -> subprocess.Popen:
    script = _WRITER.format(tests=TESTS_DIR, repo=REPO_DIR, path=path)
    return subprocess.Popen([sys.executable, "-c", script, tag, str(count), namespace],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_and_four_threads_write_at_once(store_path):
    path = store_path
    mem = _mem(path)
    procs = [_writer(path, tag, 60) for tag in ("A", "B")] + [_writer(path, "C", 30, namespace="other")]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    errors = _write_from_threads(mem, 4, 30)
    acked = {}
    for proc in procs:
        out, err = proc.stdout.read(), proc.stderr.read()  # not communicate(): readline buffered
        assert proc.wait(timeout=180) == 0, err
        assert "locked" not in err
        acked[proc] = [tuple(int(v) for v in line.split()) for line in out.splitlines()]
    assert errors == []
    # every acknowledged write is there exactly once, with its own id, in its own namespace
    assert len(mem) == 4 * 30 + 2 * 60 + 30  # this process pulls the other processes' writes
    summaries = [n.summary for n in mem.nodes()]
    assert len(summaries) == len(set(summaries)) == 4 * 30 + 2 * 60
    ids = [node_id for lines in acked.values() for node_id, _ in lines]
    assert len(ids) == len(set(ids)) == 150
    assert {n.summary.split(" code ")[1] for n in mem.nodes("other")} == {f"PCx{i}" for i in range(30)}
    nodes, _ = mem.route_memory("process B wrote item 59 code PBx59", k=1)
    assert nodes and "PBx59" in nodes[0].summary
    assert all("PC" not in n.summary for n in mem.route_memory("process C wrote item 3 code PCx3", k=10)[0])
    mem.close()


def test_opening_a_postgres_store_while_a_write_is_open_does_not_deadlock(postgres_databases):
    """A process that opens the store (schema setup) while another one is inside a write: the
    writer holds the ``seq`` row and then inserts into ``nodes``; the opener must queue behind it
    on that row before its DDL locks ``nodes``, or PostgreSQL aborts one of them (deadlock)."""
    import psycopg

    from apt_ext.memory.stores.postgres import PostgresStore

    url = postgres_databases.new()
    writer = PostgresStore(url)
    errors: list[BaseException] = []

    def open_second() -> None:
        try:
            PostgresStore(url).close()
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    opener = threading.Thread(target=open_second)
    with psycopg.connect(url, autocommit=True) as watch, writer.transaction() as tx:
        tx.next_seq()  # the seq row is locked and updated by this open transaction
        opener.start()
        deadline = time.monotonic() + 30
        while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type = 'Lock'").fetchone()[0]:
            assert time.monotonic() < deadline and opener.is_alive(), errors
            time.sleep(0.05)
        time.sleep(1.5)  # past deadlock_timeout (1 s): a lock cycle would be detected now
        tx.insert_node("default", "a node", [], {}, [], 1.0, 1, np.ones(4, np.float32), 0.0, "a node")
    opener.join(timeout=30)
    assert not opener.is_alive() and errors == []
    writer.close()


def test_a_second_memory_follows_the_change_sequence(store_path):
    """Two memories on two connections to one store: each one's index follows the other's
    writes, updates and deletes (pulled by the change sequence before every read)."""
    first, second = _mem(store_path), _mem(store_path)
    a = first.write_memory("The staging database lives on host db-7 in rack 12")
    assert second.route_memory("staging database host db-7", k=1)[0][0].id == a.id
    b = second.write_memory("The backup job runs nightly at 02:30 from host bk-3")
    assert first.route_memory("backup job nightly host bk-3", k=1)[0][0].id == b.id
    second.update(a.id, text="The staging database lives on host db-9 in rack 14")
    assert "db-9" in first.get(a.id).summary
    assert first.delete(b.id) is True
    assert second.get(b.id) is None and len(second) == 1
    assert second.stats()["namespaces"]["default"]["writes"] == 2
    first.close()
    second.close()


def test_save_copies_either_store_into_a_sqlite_file(store_path, tmp_path):
    mem = _mem(store_path)
    node = mem.write_memory("Ticket 4471 was closed on 2026-03-02 by Ravi", speaker="Ravi",
                            timestamp="2026-03-02T10:00:00")
    mem.write_memory("Only in the other namespace: invoice 88", namespace="other")
    copy = str(tmp_path / "copy.db")
    mem.save(copy)
    loaded = AIMMemory.load(copy, embedder=TokenHashEmbedder())
    got = loaded.get(node.id, with_evidence=True)
    assert got.evidence_text == node.summary and got.speaker == "Ravi" and got.timestamp == node.timestamp
    assert loaded.namespaces() == ["default", "other"]
    assert loaded.write_memory("A new fact after the copy, number 5").id > node.id


def test_sigkill_in_write_loop_keeps_every_acknowledged_write(store_path):
    path = store_path
    proc = _writer(path, "K", 100_000)
    assert proc.stdout.readline().strip() == "ready"
    acked = []
    deadline = time.time() + 60
    while len(acked) < 40 and time.time() < deadline:
        line = proc.stdout.readline()
        acked.append(tuple(int(v) for v in line.split()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(acked) >= 40
    mem = _mem(path)
    stored = {n.id: n.summary for n in mem.nodes()}
    for node_id, i in acked:
        assert f"PKx{i}" in stored[node_id]
    assert len(stored) >= len(acked)


@pytest.mark.parametrize("text,anchors", [
    ("The review is on 2026-01-21.", {"2026-01-21", "2026-01", "md:01-21"}),
    ("会议定在2026年1月21日。", {"2026-01-21", "2026-01", "md:01-21"}),
    ("What did Maria do on 7 May 2023?", {"2023-05-07", "2023-05", "md:05-07", "maria"}),
    ("She moved on May 7th, 2023 to Porto", {"2023-05-07", "2023-05", "md:05-07", "porto"}),
    ("Sales in March 2024 were up 3.5%", {"2024-03", "3.5%", "sales"}),
    ("On May 2nd we met", {"md:05-02"}),
    ("5月7日我们去了公园", {"md:05-07"}),
    ("What did Kevin watch on the night of 10.01.2024?", {"2024-01-10", "2024-01", "md:01-10", "kevin"}),
    ("Sent 1.2.2024.", {"2024-02-01", "2024-02", "md:02-01"}),
])
def test_date_anchors(text, anchors):
    from apt_ext.memory import extract_anchors
    got = extract_anchors(text)
    assert anchors <= got and not got & {"2026", "2024", "2023", "21", "7", "2", "1", "5", "7th", "2nd"}, got


@pytest.mark.parametrize("text,anchors", [
    ("Python 3.10.2 ships a 3.5% faster loop", {"python3.10.2", "3.5%"}),
    ("pi is 3.14 and e 2.71", {"3.14", "2.71"}),
    ("build 1.2.2024.5 is out", {"1.2.2024.5"}),
    ("the value 45.13.2024 is no date", {"45.13.2024"}),
    ("version 2.10.12 and v1.2.3", {"2.10.12", "v1.2.3"}),
])
def test_dotted_numbers_that_are_not_day_first_dates_stay_numbers(text, anchors):
    """Day-first dotted dates need a four-digit year and a calendar day and month: versions,
    decimals and longer dotted numbers keep the anchors they had, and give no date anchor."""
    from apt_ext.memory import extract_anchors
    got = extract_anchors(text)
    assert anchors <= got and not any(a.startswith("md:") or a[:4].isdigit() and "-" in a for a in got), got


def test_naive_timestamp_keeps_the_callers_day_whatever_the_local_timezone(monkeypatch):
    """A naive datetime / ISO string is the caller's wall-clock time: its day anchor is the day
    written (03:07 on 20.01 is 20.01), not shifted by the machine's time zone."""
    import time as _time

    from apt_ext.memory.conversation import field_anchors, to_timestamp
    for tz in ("UTC", "America/Los_Angeles", "Asia/Tokyo"):
        monkeypatch.setenv("TZ", tz)
        _time.tzset()
        for stamp, day in (("2024-01-20T03:07:00", "2024-01-20"), ("2024-01-19T23:59:00", "2024-01-19")):
            assert day in field_anchors(None, to_timestamp(stamp)), (tz, stamp)
    monkeypatch.delenv("TZ")
    _time.tzset()


def test_anchor_pattern_guards_only_skip_patterns_that_cannot_match():
    """extract_anchors runs a pattern only when the text has what every match of it needs (a digit
    for dates, 年, 月, an English month name, "=" "^" "O(" for formulas, 是 or 定义为 for Chinese
    definitions): on fresh random texts made of the pieces those patterns match, a pattern whose
    guard says no finds nothing, so the guards change no anchor."""
    import random

    from apt_ext.memory import anchors as A
    seed = random.randrange(2 ** 32)
    rng = random.Random(seed)
    pieces = ["May", "may", "Jan.", "Sept", "mayday", "of", "5", "21st", "2nd", "2023", "2026-01-21", "2026/1/21",
              "2026年", "1月", "21日", "5月7日", "号", "=", "^", "O(n)", "x = 3", "^2", "O(", "是", "是指", "定义为",
              "指的是", "RoPE", "is", "GPT-4", "v3.1", "3.5%", "19.01.2024", "1.2.2024", "3.10.2", "Alice", "旋转位置编码", ".", ",", "\n", "١٢"]
    english = [pattern for pattern, _ in A._DATE_EN]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", ", "]) for _ in range(rng.randint(1, 10)))
        skipped = []
        if not A._DIGIT.search(text):
            skipped += [A._DATE, A._DATE_DMY, A._DATE_ZH, A._MONTH_DAY_ZH, *english]
        if "." not in text:
            skipped.append(A._DATE_DMY)
        if "年" not in text:
            skipped.append(A._DATE_ZH)
        if "月" not in text:
            skipped.append(A._MONTH_DAY_ZH)
        if not A._ANY_MONTH.search(text):
            skipped += english
        if not ("=" in text or "^" in text or "O(" in text):
            skipped.append(A._FORMULA)
        if not ("是" in text or "定义为" in text):
            skipped.append(A._DEF_ZH)
        for pattern in skipped:
            assert pattern.search(text) is None, (seed, text, pattern.pattern[:40])


def test_anchor_overlap_with_the_query_count_given():
    from apt_ext.memory.anchors import anchor_overlap, extract_anchors, query_anchor_count
    query = "What did Maria pay for GPT-4 on 7 May 2023? RoPE"
    q = extract_anchors(query)
    for text in ("Maria paid $20 for GPT-4 on 7 May 2023", "RoPE is a rotary position encoding", "nothing here"):
        node = extract_anchors(text)
        weight = {a: 0.5 + 0.01 * len(a) for a in q | node}.get
        assert anchor_overlap(q, query.lower(), node, weight, query_anchor_count(q)) == \
            anchor_overlap(q, query.lower(), node, weight)
    with pytest.raises(ValueError, match="count"):
        anchor_overlap(q, query.lower(), q, None, 0)


def test_speaker_anchors_apart_from_names_in_text():
    from apt_ext.memory.anchors import extract_anchors, is_word_anchor, query_anchor_count, with_speaker_forms
    from apt_ext.memory.conversation import field_anchors
    assert field_anchors("Kate Lee", None) == {"spk:kate", "spk:lee"}
    q = extract_anchors("What did Kate pay for GPT-4 on 7 May 2023?")
    forms = with_speaker_forms(q)
    assert "kate" in q and "spk:kate" in forms and forms - q == {"spk:" + a for a in q if is_word_anchor(a)}
    assert query_anchor_count(forms) == query_anchor_count(q)  # a name counts once
    assert is_word_anchor("kate") and not any(is_word_anchor(a) for a in ("gpt4", "2023-05-07", "md:05-07",
                                                                          "spk:kate", "def:rope", "π"))


def test_a_question_naming_a_person_prefers_what_they_wrote():
    """The speaker field, not a name written in a turn, marks a person's facts: the turn Kate
    wrote gets the anchor boost of the question's "Kate" either way; a greeting that names her
    gets it only as far as word_anchor_weight says (none by default)."""
    scores = {}
    for word_weight in (0.0, 1.0):
        mem = _mem(word_anchor_weight=word_weight, min_similarity=0.0)
        fact = mem.write_memory("I collect vintage cameras every weekend", speaker="Kate")
        greeting = mem.write_memory("Hi Kate how was your weekend", speaker="Bob")
        for i in range(30):  # other turns, so that Kate's anchors are rare enough to weigh
            mem.write_memory(f"Bob mentioned the train schedule number {i} again", speaker="Bob")
        nodes = mem.route_memory("What does Kate collect", k=2)[0]
        scores[word_weight] = {n.id: n.score for n in nodes}
        assert nodes[0].id == fact.id and greeting.id in scores[word_weight]
    assert scores[0.0][fact.id] == pytest.approx(scores[1.0][fact.id])
    assert scores[1.0][greeting.id] > scores[0.0][greeting.id] + 0.1


def test_rows_written_before_speaker_anchors_had_a_prefix_get_them_on_open(tmp_path):
    """A SQLite file whose rows carry the speaker's bare name (the fourteenth session's format)
    is matched by a question naming the speaker once reopened."""
    import json
    import sqlite3
    path = str(tmp_path / "old.db")
    mem = _mem(path)
    node = mem.write_memory("Invoice 4471 was paid in full", speaker="Zoë")
    mem.close()
    con = sqlite3.connect(path)
    old = sorted(a[4:] if a.startswith("spk:") else a for a in node.fields["anchors"])
    con.execute("UPDATE nodes SET anchors=? WHERE id=?", (json.dumps(old), node.id))
    con.commit()
    con.close()
    mem = _mem(path)
    assert "spk:zoë" in mem._spaces["default"].entries[node.id].anchors
    mem.close()


def test_speaker_and_timestamp_are_validated_and_stored(store_path):
    mem = _mem(store_path)
    node = mem.write_memory("Invoice 4471 was paid in full", speaker="Zoë", timestamp=1_700_000_000)
    assert node.speaker == "Zoë" and node.timestamp == 1_700_000_000.0
    assert {"spk:zoë", "2023-11-14", "2023-11", "md:11-14"} <= set(node.fields["anchors"])
    for bad, exc in ((3, TypeError), ("", ValueError), ("x" * 200, ValueError)):
        with pytest.raises(exc, match="speaker"):
            mem.write_memory("Invoice 4472 was paid in full", speaker=bad)
    for bad, exc in (("soon", ValueError), (float("nan"), ValueError), (True, TypeError), ([1], TypeError)):
        with pytest.raises(exc, match="timestamp"):
            mem.write_memory("Invoice 4473 was paid in full", timestamp=bad)
    assert len(mem) == 1
    # a query anchor no node carries (this date) changes nothing and breaks nothing
    assert mem.route_memory("Invoice 4471 was paid in full on 2020-01-01", k=1)[0][0].id == node.id


def test_stats_never_show_a_database_password():
    from apt_ext.memory.memory import _redacted
    assert _redacted("postgresql://aim:s3cret@db.example:5432/mem") == "postgresql://aim:***@db.example:5432/mem"
    assert _redacted("postgresql://aim@db/mem") == "postgresql://aim@db/mem" and _redacted("/tmp/x.db") == "/tmp/x.db"
