"""Command line of the training worker (protocol: docs/trainer-protocol.md).

    cd trainer && python3 -m opentune_trainer train --spec /abs/path/job-spec.json
    cd trainer && python3 -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m opentune_trainer train --spec /abs/path/job-spec.json    # DDP (LoRA) / FSDP2 (full)
    cd trainer && python3 -m opentune_trainer init-tiny --out /abs/path/models/opentune/tiny-llama
    cd trainer && python3 -m opentune_trainer tiny-files --out ../models/opentune/tiny-llama
    cd trainer && python3 -m opentune_trainer doctor      # JSON: torch, CUDA devices, bf16, kernels
    cd trainer && python3 -m opentune_trainer serve [--max-batch 32] [--memory-gb 4] [--idle-seconds 600]
        # the inference worker: JSON lines on stdin/stdout (docs/inference-protocol.md)

Exit codes: 0 done · 2 the job's fault (an `error` line says which) · 3 stopped by SIGTERM after
saving state · anything else our fault (an `error` line with internal_error when we can).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="opentune_trainer")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("train", help="run a fine-tuning job").add_argument("--spec", required=True)
    t = sub.add_parser("init-tiny", help="write the built-in tiny model (files + seeded weights)")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    sub.add_parser("tiny-files", help="regenerate the tiny model's static files").add_argument("--out", required=True)
    sub.add_parser("doctor", help="print what training will run on (JSON)")
    s = sub.add_parser("serve", help="the inference worker (docs/inference-protocol.md)")
    # slots per loaded weights: more rows share each weight read (throughput), each costs KV cache
    s.add_argument("--max-batch", type=int, default=32)
    # weights + adapters + KV caches; past it the least recently used idle ones are unloaded
    s.add_argument("--memory-gb", type=float, default=4.0)
    # a model nobody asked for this long gives its memory back
    s.add_argument("--idle-seconds", type=float, default=600.0)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)

    if args.cmd == "doctor":
        from .doctor import main as doctor

        return doctor()

    if args.cmd == "serve":
        return serve(args)

    if args.cmd == "init-tiny":
        from .tiny import init_tiny

        init_tiny(args.out, args.seed)
        return 0
    if args.cmd == "tiny-files":
        from .tiny import write_static

        write_static(args.out)
        return 0
    return train(args.spec)


def stop_with_parent() -> None:
    """Ask Linux to SIGTERM us when the service dies (even by SIGKILL): the trainer then saves its
    state and exits, instead of training on as an orphan beside the runner that resumes the job."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except OSError:
        pass  # not glibc: the lease still hands the job over, the orphan just runs to its end


def serve(args) -> int:
    """The inference worker: `ready`, then requests until stdin closes. Protocol lines only on stdout."""
    from . import protocol

    protocol.claim_stdout()
    stop_with_parent()  # an orphaned worker would hold its weights' memory forever
    if args.max_batch < 1:
        protocol.emit("error", id=None, code="bad_request", message="--max-batch must be at least 1")
        return 2
    try:
        from .inference.server import serve as run

        return run(args.device, args.max_batch, args.memory_gb, args.idle_seconds)
    except Exception as e:  # noqa: BLE001 - the last line of defence: report, then exit non-zero
        traceback.print_exc()
        protocol.emit("error", id=None, code="internal_error", message=f"{type(e).__name__}: {e}")
        return 1


def disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when torch.save wraps it in a RuntimeError that only keeps the text."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


def train(spec_path: str) -> int:
    from . import protocol

    protocol.claim_stdout()
    if os.environ.get("RANK", "0") != "0":  # under torchrun (docs/multi-gpu.md): rank 0 speaks for all
        protocol.mute()
    stop_with_parent()  # under torchrun the parent is torchrun, which the runner stops
    try:
        from .spec import load_spec

        with protocol.phase("starting"):  # importing torch can take a while on a cold disk
            from .train import run

        return run(load_spec(spec_path))
    except protocol.JobError as e:
        protocol.error(e.code, e.message, e.param)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: report, then exit non-zero
        traceback.print_exc()
        if disk_full(e):  # the runner tells the user which disk (docs/errors.md, storage_full)
            where = getattr(e, "filename", None)
            protocol.error("storage_full", f"no space left writing {where}" if where else str(e).splitlines()[0])
            return 2
        if type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e):
            protocol.error("out_of_memory", str(e).splitlines()[0])
            return 2
        protocol.error("internal_error", f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
