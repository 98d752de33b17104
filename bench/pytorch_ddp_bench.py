"""PyTorch DDP (gloo, CPU) anchor: data-parallel training-step throughput (images/s).

Usage: python3 bench/pytorch_ddp_bench.py --model lenet --batch 128 --workers 2 --threads 1 --steps 30
                                          [--warmup 5] [--no-overlap]

--batch is the GLOBAL batch; it is split over --workers processes (the first batch % workers
ranks take one extra sample). Each worker is a separate process (torch.multiprocessing.spawn)
on localhost using torch.set_num_threads(--threads) and a gloo process group.
Prints exactly one JSON line (from rank 0):
  {"framework": "pytorch-ddp-gloo", "model", "batch", "workers", "threads", "overlap",
   "images_per_s", "step_ms_median"}
images_per_s = global batch / median step time (forward + backward + optimizer.step) on rank 0.
"""
import argparse, json, os, socket, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_bench import MODELS  # noqa: E402  (lenet() etc.; each returns (model, input_shape))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def local_batch(batch, workers, rank):
    return batch // workers + (1 if rank < batch % workers else 0)


def worker(rank, a):
    world = a.workers
    torch.set_num_threads(a.threads)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same init everywhere (DDP also broadcasts rank 0's params)
        net, shape = MODELS[a.model]()
        net.train()
        model = DDP(net, bucket_cap_mb=25)  # 25 MB buckets = the DDP default
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        lossf = nn.CrossEntropyLoss()

        # Synthetic data, created once; per-rank seed so shards differ.
        g = torch.Generator().manual_seed(1000 + rank)
        n = local_batch(a.batch, world, rank)
        x = torch.randn(n, *shape, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        params = [p for p in model.parameters() if p.requires_grad]

        if a.overlap:
            def step():
                opt.zero_grad(set_to_none=True)
                loss = lossf(model(x), y)
                loss.backward()  # DDP bucketed all-reduce overlapped with backward
                opt.step()
        else:
            # --no-overlap: emulate a trainer that does NOT overlap communication with
            # backward. Under model.no_sync() DDP skips its bucketed all-reduce hooks, so
            # backward computes only local gradients; afterwards every grad is all-reduced
            # manually, one blocking dist.all_reduce per parameter, and divided by the world
            # size (DDP's averaging semantics). Communication thus happens strictly after
            # the whole backward pass.
            def step():
                opt.zero_grad(set_to_none=True)
                with model.no_sync():
                    loss = lossf(model(x), y)
                    loss.backward()
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                        p.grad.div_(world)
                opt.step()

        for _ in range(a.warmup):
            step()
        dist.barrier()
        times = []
        for _ in range(a.steps):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        dist.barrier()

        if rank == 0:
            med = statistics.median(times)
            print(json.dumps({'framework': 'pytorch-ddp-gloo', 'model': a.model, 'batch': a.batch,
                              'workers': world, 'threads': a.threads, 'overlap': a.overlap,
                              'images_per_s': round(a.batch / med, 1),
                              'step_ms_median': round(med * 1e3, 3)}), flush=True)
    finally:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default='lenet', choices=MODELS)
    ap.add_argument('--batch', type=int, default=128, help='global batch, split over workers')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1, help='torch threads per worker')
    ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--no-overlap', dest='overlap', action='store_false',
                    help='no_sync() backward, then manual per-parameter all_reduce')
    a = ap.parse_args()
    if a.workers < 1 or a.batch < a.workers:
        ap.error('need workers >= 1 and batch >= workers')
    if a.steps < 1 or a.warmup < 0:
        ap.error('need steps >= 1 and warmup >= 0')

    os.environ['MASTER_ADDR'] = '127.0.0.1'
    os.environ['MASTER_PORT'] = str(free_port())
    # Keep each worker's intra-op pool at --threads even before set_num_threads runs.
    os.environ['OMP_NUM_THREADS'] = str(a.threads)

    mp.spawn(worker, args=(a,), nprocs=a.workers, join=True)


if __name__ == '__main__':
    main()
