"""Train the network (`models.inorig.INORig`) on cached synthetic subjects with ground truth.

    python -m models.training.data --out cache/train_synth.npz --subjects 600 --images 6
    python train.py --cache cache/train_synth.npz --out runs/inorig_ict --export net_weights/inorig_ict.pth

Two phases: ``--regression-steps`` steps train the features and the regression head alone (no
solver, cheap), then the whole network trains end to end through the unrolled solver. Losses
(`models.training.losses`): per-stage vertex and neutral-shape errors against the ground truth, rotation,
landmark reprojection, rig-code prior, and with ``--photometric-weight`` a photometric term
(image vs shaded albedo at the fitted meshes; off for the shipped weights). Writes a CSV log
(``<out>/log.csv``), resumable checkpoints (``<out>/last.pt``; ``--resume``), and with
``--export`` the shipped weights (`models.weights`, with the command, seed and final losses
inside) and a copy of the log beside them.
``--device cuda`` trains on a GPU; under ``torchrun --nproc_per_node N train.py ...`` it trains
with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler  # noqa: E402

from core.face_model.load import load_face_model  # noqa: E402
from models.inorig import INORig, NetworkConfig  # noqa: E402
from models.training.augment import AugmentConfig  # noqa: E402
from models.training.data import SyntheticFaceDataset  # noqa: E402
from models.training.losses import LossWeights, network_losses  # noqa: E402
from models.weights import save_network  # noqa: E402

logger = logging.getLogger("train")

ROOT = Path(__file__).resolve().parent
_GT_KEYS = ("identity", "expression", "rotation", "scale", "trans2d")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, required=True, help="training cache from models.training.data")
    p.add_argument("--out", type=Path, required=True, help="run folder: log.csv, last.pt")
    p.add_argument("--export", type=Path, default=None, help="write the final weights here (net_weights/...)")
    p.add_argument("--model-path", type=Path, default=ROOT / "external" / "ICT-FaceKit")
    p.add_argument("--steps", type=int, default=3000, help="total optimizer steps")
    p.add_argument("--regression-steps", type=int, default=2000, help="first steps without the solver")
    p.add_argument("--persons", type=int, default=2, help="persons per batch (per process)")
    p.add_argument("--images", type=int, default=4, help="images per person")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--detected-probability", type=float, default=0.5,
                   help="chance of the dlib detections instead of the ground-truth landmarks")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--photometric-weight", type=float, default=0.0,
                   help="weight of the photometric loss on the final meshes (0: off, as the shipped weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--levels", type=int, default=NetworkConfig.levels)
    p.add_argument("--iterations", type=int, default=NetworkConfig.iterations)
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _log_fields(levels: int, iterations: int) -> List[str]:
    stages = range(levels + 1)
    return (["step", "phase", "lr", "seconds", "total"] + [f"vertex_{s}" for s in stages]
            + [f"neutral_{s}" for s in stages] + ["rotation_0", "landmarks", "photometric"]
            + [f"cost_{lv}_{t}" for lv in range(levels) for t in range(iterations + 1)])


def _to(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _lr_at(step: int, args: argparse.Namespace) -> float:
    """Warm-up then cosine within each phase (the solver phase restarts at a lower rate)."""
    if step < args.regression_steps:
        start, length, base = 0, args.regression_steps, args.lr
    else:
        start, length, base = args.regression_steps, max(1, args.steps - args.regression_steps), 0.3 * args.lr
    t = (step - start) / max(1, length)
    warm = min(1.0, (step - start + 1) / 50.0)
    return base * warm * 0.5 * (1.0 + np.cos(np.pi * min(t, 1.0)))


def train(args: argparse.Namespace) -> Dict[str, float]:
    """Run the training; returns the mean losses of the last logging window."""
    distributed = _distributed()
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        rank = dist.get_rank()
        if args.device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device(args.device if not (distributed and args.device.startswith("cuda"))
                          else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    seed_everything(args.seed + rank)
    face = load_face_model("ict", args.model_path).region("face")
    dataset = SyntheticFaceDataset(args.cache, images_per_subject=args.images,
                                   augment=None if args.no_augment else AugmentConfig(),
                                   detected_probability=args.detected_probability, seed=args.seed)
    config = NetworkConfig(image_size=int(dataset.meta["image_size"]), levels=args.levels,
                           iterations=args.iterations)
    net = INORig(face, config).place(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, epoch, done_in_epoch = 0, 0, 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "last.pt"
    if args.resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, done_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batches_in_epoch"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed from %s at step %d", checkpoint, step)
    model = DistributedDataParallel(net, find_unused_parameters=True) if distributed else net
    log_path = out / "log.csv"
    resuming = args.resume and step > 0
    log_file = open(log_path, "a" if resuming else "w", newline="")
    writer: Optional[csv.DictWriter] = None
    window: List[Dict[str, float]] = []
    summary: Dict[str, float] = {}
    start = time.perf_counter()
    net.train()
    while step < args.steps:
        dataset.set_epoch(epoch)
        if distributed:
            sampler = DistributedSampler(dataset, seed=args.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        loader = DataLoader(dataset, batch_size=args.persons, sampler=sampler, drop_last=True,
                            num_workers=args.workers)
        for index, batch in enumerate(loader):
            if index < done_in_epoch:  # resumed mid-epoch: these batches were trained on already
                continue
            if step >= args.steps:
                break
            batch = _to(batch, device)
            solve_steps = step >= args.regression_steps
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, args)
            with torch.no_grad():
                truth = {"identity": batch["identity"], "expression": batch["expression"],
                         "rotation": batch["rotation"], "scale": batch["scale"], "trans2d": batch["trans2d"]}
                batch["landmarks_true"] = net.projected_landmarks(truth)
            output = model(batch["images"], batch["landmarks"], solve_steps=solve_steps)
            losses = network_losses(net, output, batch, LossWeights(
                stages=(1.0,) if not solve_steps else (0.5,) * config.levels + (1.0,),
                photometric=args.photometric_weight))
            optimizer.zero_grad(set_to_none=True)
            finite = torch.isfinite(losses["total"].detach()).to(torch.float32)
            if distributed:  # every process skips the batch, or none (a lone skip would hang the all-reduce)
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite):
                logger.warning("step %d: non-finite loss, batch skipped", step)
                continue
            losses["total"].backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            if not torch.isfinite(norm):
                logger.warning("step %d: non-finite gradient, batch skipped", step)
                continue
            optimizer.step()
            step += 1
            done_in_epoch = index + 1
            row = {k: float(v.detach()) for k, v in losses.items()}
            window.append(row)
            if rank == 0 and (step % args.log_every == 0 or step == args.steps):
                keys = sorted({k for r in window for k in r})
                summary = {k: float(np.mean([r[k] for r in window if k in r])) for k in keys}
                record = {"step": step, "phase": "full" if solve_steps else "regression",
                          "lr": _lr_at(step - 1, args), "seconds": round(time.perf_counter() - start, 1),
                          **{k: round(v, 4) for k, v in summary.items()}}
                if writer is None:
                    fields = _log_fields(config.levels, config.iterations)
                    writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
                    if log_file.tell() == 0:
                        writer.writeheader()
                writer.writerow(record)
                log_file.flush()
                logger.info("step %d %s", step, " ".join(f"{k}={v:.3f}" for k, v in summary.items()
                                                          if k.startswith(("total", "vertex", "neutral"))))
                window = []
            if rank == 0 and (step % args.checkpoint_every == 0 or step == args.steps):
                torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "epoch": epoch, "batches_in_epoch": done_in_epoch, "torch_rng": torch.get_rng_state(),
                            "args": {k: str(v) for k, v in vars(args).items()}}, checkpoint)
        epoch += 1
        done_in_epoch = 0
    log_file.close()
    if rank == 0 and args.export is not None:
        info = {"command": " ".join(["python", "train.py", *args.argv]), "seed": args.seed,
                "steps": step, "cache": str(args.cache), "final_losses": summary,
                "seconds": round(time.perf_counter() - start, 1),
                "log": f"{Path(args.export).stem}_log.csv (beside the weights)"}
        path = save_network(net.eval(), args.export, training=info)
        shipped_log = path.with_name(f"{path.stem}_log.csv")
        shutil.copyfile(log_path, shipped_log)
        logger.info("wrote %s and its training log %s", path, shipped_log)
    if distributed:
        dist.destroy_process_group()
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.regression_steps > args.steps:
        raise SystemExit(f"--regression-steps ({args.regression_steps}) exceeds --steps ({args.steps})")
    if not args.cache.is_file():
        raise SystemExit(f"--cache {args.cache}: not found (build it with python -m models.training.data)")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
