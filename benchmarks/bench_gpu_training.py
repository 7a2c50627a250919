"""Training and inference throughput on a GPU, side by side in one run (images/s):

    teacher training step  (convnextv2_large, focal loss, AdamW)
    student training step  (efficientnet_b2, cross-entropy: the control student)
    distillation step      (frozen teacher forward + student training step, KD loss)
    inference              (teacher, student; bf16 autocast and fp32)

Each row runs the same model code as ``core.train.loop.fit`` (``core.models.build``, autocast,
channels_last, the project's losses) on random batches already on the device, so the numbers are
the model's ceiling; the images/s of a real recipe run (data loading and augmentation included)
are in its ``history.json`` (``--summarize RUN_DIR`` prints them). Timing: CUDA events around
``--steps`` steps after ``--warmup`` steps, median of three rounds.

    python benchmarks/bench_gpu_training.py --out runs/bench-gpu                 # 384 px, batches 16,32
    python benchmarks/bench_gpu_training.py --batches 32 --compile               # torch.compile rows too
    python benchmarks/bench_gpu_training.py --device cpu --teacher convnextv2_atto \\
        --student efficientnet_b0 --size 64 --batches 4 --steps 2                # smoke test on a CPU
    python benchmarks/bench_gpu_training.py --summarize runs/synthetic-gpu       # a recipe run's images/s
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timer(device):
    import torch

    if device.type == "cuda":

        def run(fn, n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
    else:

        def run(fn, n):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            return time.perf_counter() - t

    return run


def measure(fn, device, *, steps: int, warmup: int, rounds: int = 3) -> float:
    """Median seconds per call of ``fn`` over ``rounds`` rounds of ``steps`` calls, after ``warmup``."""
    import torch

    run = _timer(device)
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return statistics.median(run(fn, steps) / steps for _ in range(rounds))


def _build(arch: str, k: int, device, channels_last: bool, **kw):
    import torch

    from core.models import build

    model, _ = build(arch, k, **kw)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def bench(args) -> list[dict]:
    import torch

    from core.train.loop import autocast_context
    from core.train.losses import DistillationLoss, FocalLoss

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = args.amp if device.type == "cuda" else "off"
    k, size, cl = 3, args.size, not args.no_channels_last
    rows: list[dict] = []

    def batch(n):
        x = torch.randn(n, 3, size, size, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, k, (n,), device=device)

    def record(what, model_name, n, secs, note=""):
        mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        row = {
            "what": what,
            "model": model_name,
            "batch": n,
            "ms_per_step": 1000 * secs,
            "images_per_s": n / secs,
            "peak_mem_gib": mem,
            "note": note,
        }
        rows.append(row)
        print(
            f"{what:<22} {model_name:<18} batch {n:>3}  {n / secs:9.1f} images/s  {1000 * secs:8.2f} ms/step"
            f"  {mem:6.1f} GiB  {note}",
            flush=True,
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def train_step(model, opt, loss_fn, x, y, teacher=None, kd=None):
        def step():
            with autocast_context(device, amp):
                logits = model(x)
                if teacher is not None:
                    with torch.no_grad():
                        t = teacher(x)
                    loss = kd(logits, t, y)
                else:
                    loss = loss_fn(logits.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    variants = ([] if args.compile_only else [("eager", False)]) + (
        [("compiled", True)] if args.compile or args.compile_only else []
    )
    for n in args.batches:
        x, y = batch(n)
        for tag, comp in variants:
            # teacher training
            teacher = _build(args.teacher, k, device, cl, drop_rate=0.3, drop_path_rate=0.3).train()
            t_run = torch.compile(teacher) if comp else teacher
            opt = torch.optim.AdamW(teacher.parameters(), lr=1e-5, weight_decay=0.05)
            t0 = time.perf_counter()
            fn = train_step(t_run, opt, FocalLoss(2.0).to(device), x, y)
            fn()
            first = time.perf_counter() - t0
            secs = measure(fn, device, steps=args.steps, warmup=args.warmup)
            record("teacher train", args.teacher, n, secs, f"{tag}, first step {first:.1f} s")
            del opt
            if args.teacher_only:
                del teacher, t_run
                continue
            # student alone (control)
            student = _build(args.student, k, device, cl, drop_rate=0.3).train()
            s_run = torch.compile(student) if comp else student
            opt = torch.optim.AdamW(student.parameters(), lr=1e-5, weight_decay=0.01)
            fn = train_step(s_run, opt, torch.nn.CrossEntropyLoss(), x, y)
            t0 = time.perf_counter()
            fn()
            first = time.perf_counter() - t0
            secs = measure(fn, device, steps=args.steps, warmup=args.warmup)
            record("student train", args.student, n, secs, f"{tag}, first step {first:.1f} s")
            # distillation: frozen teacher in eval mode + student step
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            fn = train_step(s_run, opt, None, x, y, teacher=t_run, kd=DistillationLoss(0.3, 4.0))
            secs = measure(fn, device, steps=args.steps, warmup=args.warmup)
            record("distillation step", f"{args.teacher}->{args.student}"[:18], n, secs, tag)
            del opt
            # inference
            student.eval()
            for name, _model, run in (("teacher", teacher, t_run), ("student", student, s_run)):
                arch = args.teacher if name == "teacher" else args.student
                xi, _ = batch(args.infer_batch)
                for mode in ("bf16", "fp32") if device.type == "cuda" else ("fp32",):

                    def infer(run=run, xi=xi, mode=mode):
                        with torch.no_grad(), autocast_context(device, amp if mode == "bf16" else "off"):
                            run(xi)

                    secs = measure(infer, device, steps=args.steps, warmup=args.warmup)
                    record(f"inference {mode}", arch, args.infer_batch, secs, tag)
            del teacher, student, t_run, s_run
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def summarize(run_dir: Path) -> str:
    """Images/s per model of a recipe run (``history.json`` per epoch: ``images_per_s``, the training
    pass alone, or for older runs samples / epoch seconds, validation included; the first epoch, with
    cuDNN autotuning and worker start-up, is left out of the median when there are more)."""
    lines = [f"{'run':<34} {'epochs':>6} {'train images/s':>15} {'val acc (last)':>15}"]
    for hist in sorted(run_dir.rglob("history.json")):
        rows = json.loads(hist.read_text())
        if not rows:
            continue
        rates = [r.get("images_per_s") or r["samples_this_rank"] / r["seconds"] for r in rows if r.get("seconds")]
        rate = statistics.median(rates[1:] if len(rates) > 1 else rates)
        lines.append(
            f"{str(hist.parent.relative_to(run_dir)):<34} {len(rows):>6} {rate:15.1f} "
            f"{100 * rows[-1]['val_acc']:14.1f}%"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="convnextv2_large")
    p.add_argument("--student", default="efficientnet_b2")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32])
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--compile-only", action="store_true", help="time only the torch.compile'd models")
    p.add_argument("--teacher-only", action="store_true", help="time only the teacher training step")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--out", help="write bench_gpu_training.json here")
    p.add_argument("--summarize", metavar="RUN_DIR", help="print the images/s of a recipe run and exit")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(Path(args.summarize)))
        return 0
    import torch

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(
        f"device: {dev}; torch {torch.__version__}; {args.size} px; amp {args.amp}; "
        f"channels_last {not args.no_channels_last}",
        flush=True,
    )
    rows = bench(args)
    by = {(r["what"], r["batch"], r["note"].split(",")[0]): r["images_per_s"] for r in rows}
    print("\nratios (same batch, eager):")
    for n in args.batches:
        s, d, t = (by.get((w, n, "eager")) for w in ("student train", "distillation step", "teacher train"))
        if s and d and t:
            print(
                f"  batch {n}: distillation runs at {d / s:.2f}x the student-alone rate, "
                f"{d / t:.2f}x the teacher-training rate"
            )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu_training.json").write_text(
            json.dumps({"device": dev, "torch": torch.__version__, "size": args.size, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
