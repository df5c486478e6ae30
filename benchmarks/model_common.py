"""What the model benchmarks record with every result: date, machine/card, torch, command."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent


def run_meta(device: torch.device) -> dict:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.node(), "device": str(device), "card": card, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}


def save_json(name: str, payload: dict) -> Path:
    out = ROOT / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def plot_path(name: str) -> Path:
    p = ROOT / "plots" / f"{name}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
