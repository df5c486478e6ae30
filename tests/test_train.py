"""Training loop: exact resume, schedule, data, tokenizers, CLI, DDP/FSDP2 on gloo."""
from __future__ import annotations

import os
import socket

import pytest
import torch

from apt_ext.model import APTModelConfiguration
from apt_ext.train import TrainConfig, Trainer
from apt_ext.train.data import BPETokenizer, ByteTokenizer, TokenData, builtin_corpus, load_tokenizer
from apt_ext.train.trainer import lr_lambda


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(**kw) -> APTModelConfiguration:
    base = dict(vocab_size=256, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=0, num_decoder_layers=2,
                decoder_only=True, dropout=0.1, max_seq_len=32, autopoietic_rank=2)
    base.update(kw)
    return APTModelConfiguration(**base)


def small_train(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=20, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=4, eval_every=5, eval_batches=2,
                out_dir=str(tmp_path), progress=False, plot=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_is_exact(tmp_path):
    """20 steps == 10 steps + resume + 10 steps (dropout on, DBC-DAC on: RNG and error buffers restored)."""
    mc = small_model(use_dbc_dac=True, dbc_min_numel=1024)
    full = Trainer(small_train(tmp_path / "a", grad_accum=2), mc).run()
    first = Trainer(small_train(tmp_path / "b", grad_accum=2), mc).run(until=10)
    assert len(first.losses) == 10
    second = Trainer(small_train(tmp_path / "b", grad_accum=2, resume=True), mc).run()
    assert second.losses == full.losses
    assert second.evals == full.evals
    for (k, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert full.losses[-1] < full.losses[0]


def test_outputs_written(tmp_path):
    res = Trainer(small_train(tmp_path, steps=3, plot=True, eval_every=0), small_model(dropout=0.0)).run()
    for name in ("checkpoint.pt", "tokenizer.json", "loss.png", "losses.json", "model/config.json",
                 "model/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert len(res.evals) == 1 and res.tokens_per_s > 0


def test_resume_with_other_model_config_fails(tmp_path):
    Trainer(small_train(tmp_path, steps=2, eval_every=0), small_model()).run()
    with pytest.raises(ValueError, match="different model configuration"):
        Trainer(small_train(tmp_path, steps=4, resume=True), small_model(d_model=64))


def test_lr_schedule():
    assert lr_lambda(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_lambda(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_lambda(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < lr_lambda(55, 10, 100, 0.1) < 1.0


def test_data_and_tokenizers():
    text = builtin_corpus()
    assert len(text) > 100_000 and "for" in text
    b = ByteTokenizer()
    assert b.decode(b.encode("héllo")) == "héllo"
    bpe = BPETokenizer.train(text[:50_000], vocab_size=400)
    s = "def f(x): return x + 1"
    assert bpe.decode(bpe.encode(s)) == s and len(bpe.encode(s)) < len(s)
    data = TokenData(torch.tensor(b.encode(text[:20_000])), seq_len=16)
    x, y = data.batch("train", 3, 0, 5)
    x2, _ = data.batch("train", 3, 0, 5)
    assert torch.equal(x, x2) and torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(x, data.batch("train", 3, 0, 6)[0])
    # (step, micro-step, rank): every rank draws its own batch
    assert not torch.equal(data.batch("train", 3, 0, 5, 0, 0)[0], data.batch("train", 3, 0, 5, 0, 1)[0])


def test_bpe_tokenizer_saved_and_reloaded(tmp_path):
    bpe = BPETokenizer.train(builtin_corpus()[:30_000], vocab_size=300)
    bpe.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode("import os") == bpe.encode("import os")


def test_bad_train_config():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="tokenizer"):
        TrainConfig(tokenizer="words")
    with pytest.raises(ValueError, match="compile.*reduce-overhead"):
        TrainConfig(compile="fast")
    for mode in ("reduce-overhead", "max-autotune"):  # CUDA graphs lose accumulated gradients
        with pytest.raises(ValueError, match="compile.*grad_accum=2"):
            TrainConfig(compile=mode, grad_accum=2)
    TrainConfig(compile="max-autotune-no-cudagraphs", grad_accum=2)


def test_compiled_training_matches_eager(tmp_path):
    """compile="default": the model runs through torch.compile (inductor) for training and eval,
    with the same losses as eager to float32 rounding, and the checkpoint and saved model keep the
    plain module's parameter names (resumable by an eager run)."""
    mc = small_model(dropout=0.0)
    eager = Trainer(small_train(tmp_path / "e", steps=3, eval_every=3), mc).run()
    trainer = Trainer(small_train(tmp_path / "c", steps=3, eval_every=3, compile="default"), mc)
    assert trainer.net is not trainer.model and hasattr(trainer.net, "_orig_mod")
    compiled = trainer.run()
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.tensor([e for _, e in compiled.evals]), torch.tensor([e for _, e in eager.evals]),
                               rtol=1e-4, atol=1e-4)
    resumed = Trainer(small_train(tmp_path / "c", steps=4, eval_every=0, resume=True), mc)
    assert resumed.step == 3 and not any("_orig_mod" in k for k in resumed.model.state_dict())


def test_cli_train_runs(tmp_path, capsys):
    from apt_ext.cli.main import main
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    rc = main(["train", str(f), "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--d-model", "32",
               "--layers", "1", "--heads", "2", "--out-dir", str(tmp_path / "run"), "--no-progress",
               "--eval-every", "0"])
    assert rc == 0 and "trained 3 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", str(f), "--compile", "fast", "--out-dir", str(tmp_path / "run2")])
    assert "--compile" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, q) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    try:
        text = os.path.join(out, "text.txt")
        for fsdp in (False, True):  # one process group, DDP then FSDP2
            run_dir = os.path.join(out, "fsdp" if fsdp else "ddp")
            res = Trainer(small_train(run_dir, data=[text], steps=4, eval_every=2, fsdp=fsdp),
                          small_model(dropout=0.0)).run()
            w = res.model.decoder[0].ffn.up.weight
            w = w.full_tensor() if hasattr(w, "full_tensor") else w
            q.put((fsdp, rank, res.losses, res.evals, w.detach().sum().item()))
        # exact DDP resume with dropout: each rank restores its own RNG streams
        runs = {}
        for name, until, resume in (("full", None, False), ("split", 2, False), ("split", None, True)):
            tc = small_train(os.path.join(out, name), data=[text], steps=4, eval_every=2, resume=resume)
            runs[name] = Trainer(tc, small_model(dropout=0.2)).run(until=until).losses
        q.put((None, rank, runs["full"] == runs["split"], None, None))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ddp_and_fsdp2(tmp_path):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    (tmp_path / "text.txt").write_text(builtin_corpus()[:20_000])
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), q), nprocs=2, join=True)
    got = [q.get() for _ in range(6)]
    assert [g[2] for g in got if g[0] is None] == [True, True]   # DDP resume exact on both ranks
    got = sorted(g for g in got if g[0] is not None)
    for fsdp in (False, True):
        (_, _, l0, e0, w0), (_, _, l1, e1, w1) = [g for g in got if g[0] == fsdp]
        assert l0 == l1 and e0 == e1          # train and eval losses are all-reduced
        assert w0 == pytest.approx(w1, abs=1e-6)  # and the weights stay identical across ranks
        assert (tmp_path / ("fsdp" if fsdp else "ddp") / "checkpoint.pt").is_file()
    ddp, fs = [g for g in got if g[1] == 0]
    assert ddp[2] == pytest.approx(fs[2], rel=1e-4)  # same seed, same math: DDP and FSDP2 agree
