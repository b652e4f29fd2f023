"""Benchmark: step time of plain MoCo, MoCo + SwM and full SwiMDiff, side by side on one batch.

Run with ``make bench-pretrain``. All variants train on the same random batch (13 bands, 96x96,
batch 64 by default), interleaved round by round so machine noise hits them alike; the figure
of merit is the median step time ratio full / MoCo (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.config import LossConfig, ModelConfig
from core.models.swimdiff import SwiMDiff

VARIANTS = {
    "MoCo v2": LossConfig(swm_mode="off", lambda_diffusion=0.0),
    "MoCo + SwM": LossConfig(swm_mode="soft", lambda_diffusion=0.0),
    "MoCo + diffusion": LossConfig(swm_mode="off"),
    "SwiMDiff (full)": LossConfig(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=96)
    parser.add_argument("--bands", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=10, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    x_q = torch.randn(args.batch_size, args.bands, args.patch_size, args.patch_size, device=device)
    x_k = torch.randn_like(x_q)
    scene_id = torch.randint(0, 8, (args.batch_size,), device=device)
    models, optims = {}, {}
    for name, loss in VARIANTS.items():
        torch.manual_seed(0)
        models[name] = SwiMDiff(ModelConfig(in_chans=args.bands), loss).to(device).train()
        optims[name] = torch.optim.AdamW([p for p in models[name].parameters() if p.requires_grad], lr=1e-4)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds + 1):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(x_q, x_k, scene_id)
            optims[name].zero_grad(set_to_none=True)
            out.loss.backward()
            optims[name].step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ > 0:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["MoCo v2"])
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch_size}x{args.bands}x"
          f"{args.patch_size}x{args.patch_size} rounds={args.rounds}")
    base_min = min(times["MoCo v2"])
    print("| variant | median step (s) | ratio (median) | fastest step (s) | ratio (fastest) | trainable params (M) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        step, fastest = statistics.median(times[name]), min(times[name])
        params = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
        print(f"| {name} | {step:.3f} | {step / base:.2f} | {fastest:.3f} | {fastest / base_min:.2f} | {params:.2f} |")


if __name__ == "__main__":
    main()
