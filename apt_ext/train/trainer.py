"""The APT training loop: AdamW, warm-up + cosine, clipping, bf16 autocast on GPUs, gradient
accumulation, periodic eval, checkpoints with exact resume, a loss-curve PNG, DDP / FSDP2.

Exact resume: a checkpoint holds the model, optimizer and scheduler states, the torch (CPU and
CUDA) and Python RNG states, the DBC-DAC error buffers and generator, the step (batches are a
pure function of seed and step, so the step is the data position) and the loss history; under
torchrun every rank also writes its own RNG states (``rng_rank<r>.pt``).
Multi-process runs are started by ``torchrun`` (WORLD_SIZE/RANK/LOCAL_RANK in the environment):
NCCL on GPUs, gloo on CPUs; ``fsdp=True`` shards every layer with FSDP2 (``fully_shard``),
otherwise the model is wrapped in DistributedDataParallel. Each rank draws its own batches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.train.config import ConfigError, TrainConfig
from apt_ext.train.data import TokenData, load_text, load_tokenizer, make_tokenizer
from apt_ext.train.inductor_compat import cap_mix_order_reads


@dataclass
class TrainResult:
    losses: list[float]                  # train loss per optimizer step (mean over micro-batches and ranks)
    evals: list[tuple[int, float]]       # (step, eval loss)
    step_times: list[float]              # seconds per optimizer step
    tokens_per_s: float                  # over this run's steps (all ranks)
    diverged: bool
    out_dir: Path
    model: APTModel
    tokenizer: object
    loss_plot: Path | None = None        # out_dir/loss.png; None when not drawn (plot=False, no matplotlib)


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Builds data, tokenizer, model, optimizer and scheduler from the configs; ``run()`` trains."""

    def __init__(self, cfg: TrainConfig, model_cfg: APTModelConfiguration) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.world, self.rank, local = _dist_env()
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if cfg.device:
            from apt_ext.devices import check_device
            self.device = check_device(cfg.device, "device")
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", local)
        else:
            from apt_ext.devices import get_device
            self.device = get_device()
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", local if self.world > 1 else torch.cuda.current_device())
            torch.cuda.set_device(self.device)
        self.ckpt_path = self.out / "checkpoint.pt"
        if cfg.resume and not self.ckpt_path.is_file():
            raise ConfigError("resume", f"there is no checkpoint to resume from at {self.ckpt_path} "
                                        "(train without resume to start a new run there)")
        resuming = cfg.resume
        text = load_text(cfg.data)
        tok_path = self.out / "tokenizer.json"
        if resuming and tok_path.is_file():
            self.tokenizer = load_tokenizer(tok_path)
        else:
            self.tokenizer = make_tokenizer(cfg.tokenizer, text, cfg.bpe_vocab_size)
        self.data = TokenData(torch.tensor(self.tokenizer.encode(text), dtype=torch.int32), cfg.seq_len)
        model_cfg = dataclasses.replace(model_cfg, vocab_size=self.tokenizer.vocab_size,
                                        max_seq_len=max(model_cfg.max_seq_len, cfg.seq_len))
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.model = APTModel(model_cfg).to(self.device)
        self.model.tokenizer = self.tokenizer      # generate() takes and returns text
        if model_cfg.use_dbc_dac and cfg.fsdp:
            raise ValueError("use_dbc_dac: not supported with fsdp=True (gradients are sharded); use DDP")
        self.net = self.model
        if self.world > 1:
            if cfg.fsdp:
                from torch.distributed.fsdp import fully_shard
                for layer in list(getattr(self.model, "encoder", [])) + list(self.model.decoder):
                    fully_shard(layer)
                fully_shard(self.model)
            else:
                from torch.nn.parallel import DistributedDataParallel as DDP
                self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile is not None:  # the training and the eval forward; checkpoints keep self.model's names
            cap_mix_order_reads()  # newer inductor's fusion cap where torch lacks it (docs/left_spin.md)
            self.net = torch.compile(self.net, mode=cfg.compile)
        self.opt = self.model.configure_optimizers(lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_lambda(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))
        self.step, self.losses, self.evals = 0, [], []
        self.out.mkdir(parents=True, exist_ok=True)
        if resuming:
            self._load()
        elif self.rank == 0:
            self.tokenizer.save(tok_path)

    # ---- checkpoints ---------------------------------------------------------------
    def _states(self) -> tuple[dict, dict]:
        if self.cfg.fsdp and self.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
            return get_state_dict(self.model, self.opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.model.state_dict(), self.opt.state_dict()

    def save_checkpoint(self) -> None:
        model_sd, opt_sd = self._states()   # collective under FSDP: every rank calls it
        if self.world > 1:  # every rank's own RNG streams (dropout differs per rank)
            torch.save({"step": self.step, "rng": _rng_state()}, self.out / f"rng_rank{self.rank}.pt")
        if self.rank == 0:
            self._write_checkpoint(model_sd, opt_sd)
        if self.world > 1:
            dist.barrier()  # nobody reads the checkpoint before rank 0 has finished writing it

    def _write_checkpoint(self, model_sd: dict, opt_sd: dict) -> None:
        state = {"model": model_sd, "optimizer": opt_sd, "scheduler": self.sched.state_dict(),
                 "step": self.step, "rng": _rng_state(), "losses": self.losses, "evals": self.evals,
                 "dbc_dac": self.model.dbc_dac.state_dict() if self.model.dbc_dac is not None else None,
                 "train_config": dataclasses.asdict(self.cfg), "model_config": self.model.config.to_dict()}
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)   # never leave a half-written checkpoint behind

    def _load(self) -> None:
        state = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        if state["model_config"] != self.model.config.to_dict():
            raise ConfigError("resume", f"{self.ckpt_path} was written for a different model configuration")
        if self.cfg.fsdp and self.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
            set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["dbc_dac"] is not None:
            self.model.dbc_dac.load_state_dict(state["dbc_dac"])
        self.step, self.losses, self.evals = state["step"], state["losses"], [tuple(e) for e in state["evals"]]
        rng = state["rng"]
        rank_file = self.out / f"rng_rank{self.rank}.pt"
        if self.world > 1 and rank_file.is_file():
            mine = torch.load(rank_file, map_location="cpu", weights_only=False)
            if mine["step"] == self.step:
                rng = mine["rng"]
        _set_rng_state(rng)

    # ---- loop ------------------------------------------------------------------------
    def _autocast(self):
        on = self.device.type == "cuda" and self.cfg.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.compile is not None:  # a new step for CUDA graphs (the graph modes); a no-op otherwise
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            logits = self.net(x.to(self.device))
        return F.cross_entropy(logits.float().flatten(0, 1), y.to(self.device).flatten())

    @torch.no_grad()
    def evaluate(self) -> float:
        self.net.eval()
        tot = 0.0
        for i in range(self.cfg.eval_batches):
            tot += self._loss(*self.data.batch("val", self.cfg.batch_size, self.cfg.seed, i, self.rank)).item()
        self.net.train()
        loss = torch.tensor(tot / self.cfg.eval_batches)
        if self.world > 1:
            loss = loss.to(self.device)
            dist.all_reduce(loss)
            loss = loss / self.world
        return float(loss)

    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``cfg.steps`` (or stop early at step ``until``, e.g. to test resuming);
        writes the checkpoint, the model (``out_dir/model``), losses.json and loss.png (without
        matplotlib, loss.png is skipped with a one-line note on stderr)."""
        from tqdm.auto import tqdm
        cfg = self.cfg
        end = cfg.steps if until is None else min(until, cfg.steps)
        self.net.train()
        times: list[float] = []
        diverged = False
        tokens_per_step = cfg.batch_size * cfg.grad_accum * cfg.seq_len * self.world
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not cfg.progress or self.rank != 0,
                   desc="train", unit="step", dynamic_ncols=True)
        t_run = time.perf_counter()
        start_step = self.step
        try:  # the bar ends its line even when Ctrl-C stops the loop
            while self.step < end:
                t0 = time.perf_counter()
                tot = 0.0
                for micro in range(cfg.grad_accum):
                    x, y = self.data.batch("train", cfg.batch_size, cfg.seed, self.step, micro, self.rank)
                    sync_ok = micro == cfg.grad_accum - 1 or self.world == 1 or cfg.fsdp
                    ctx = self.net.no_sync() if not sync_ok else contextlib.nullcontext()
                    with ctx:
                        loss = self._loss(x, y)
                        (loss / cfg.grad_accum).backward()
                    tot += loss.item()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.sched.step()
                self.step += 1
                loss_val = tot / cfg.grad_accum
                if self.world > 1:  # the logged loss is the mean over ranks (the loss of the global batch)
                    t = torch.tensor(loss_val, device=self.device)
                    dist.all_reduce(t)
                    loss_val = t.item() / self.world
                self.losses.append(loss_val)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                times.append(time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tokens_per_step / times[-1]:,.0f}")
                if not math.isfinite(loss_val) and cfg.stop_on_nonfinite:
                    diverged = True
                    break
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                    self.evals.append((self.step, self.evaluate()))
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        elapsed = time.perf_counter() - t_run
        if not diverged and (not self.evals or self.evals[-1][0] != self.step):
            self.evals.append((self.step, self.evaluate()))
        self.save_checkpoint()
        plot = None
        if self.rank == 0:
            if not (self.cfg.fsdp and self.world > 1):
                self.model.save_pretrained(self.out / "model")
            (self.out / "losses.json").write_text(json.dumps({"train": self.losses, "eval": self.evals}))
            if cfg.plot:
                try:
                    plot = plot_losses(self.losses, self.evals, self.out / "loss.png")
                except ImportError as exc:
                    print(f"loss.png skipped: matplotlib is not installed ({exc}); the losses are in "
                          f"{self.out / 'losses.json'}", file=sys.stderr)
        done = self.step - start_step
        return TrainResult(self.losses, self.evals, times, tokens_per_step * done / max(elapsed, 1e-9),
                           diverged, self.out, self.model, self.tokenizer, plot)


def plot_losses(losses: list[float], evals: list[tuple[int, float]], path: Path) -> Path:
    """Train loss per step and eval loss at its steps, one PNG at ``path`` (returned); raises
    ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, label="train")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train(cfg: TrainConfig, model_cfg: APTModelConfiguration) -> TrainResult:
    """Train (or resume) one run; returns losses, evals, timings and the trained model."""
    return Trainer(cfg, model_cfg).run()
