"""PyTorch's side of bench/mnist_time.sh: the training `cargo run --release -- train` runs (LeNet of
src/net/models/lenet.toml, SGD momentum 0.9, lr 0.01 annealed by a cosine to 0 over the run,
batch 64, 3 epochs, MNIST normalised by 0.1307/0.3081, shuffled every epoch, the test set
evaluated after every epoch), on the same IDX files, with the same number of threads.
Prints one JSON line: wall seconds from start to the end of the last evaluation, and accuracies."""
import argparse, gzip, json, math, time, struct
import numpy as np, torch, torch.nn as nn

def idx(path):
    with gzip.open(path) if path.endswith('.gz') else open(path, 'rb') as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack('>' + 'I' * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='data/mnist')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--batch', type=int, default=64)
    a = ap.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(a.threads); torch.manual_seed(42)
    load = lambda split: (torch.from_numpy(((idx(f'{a.data}/{split}-images-idx3-ubyte.gz') / 255.0 - 0.1307) / 0.3081).astype(np.float32)).unsqueeze(1),
                          torch.from_numpy(idx(f'{a.data}/{split}-labels-idx1-ubyte.gz').astype(np.int64)))
    (xtr, ytr), (xte, yte) = load('train'), load('t10k')
    net = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    steps = a.epochs * math.ceil(len(xtr) / a.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    lossf, accs = nn.CrossEntropyLoss(), []
    for epoch in range(a.epochs):
        net.train()
        for idxs in torch.randperm(len(xtr)).split(a.batch):
            opt.zero_grad(set_to_none=True)
            lossf(net(xtr[idxs]), ytr[idxs]).backward()
            opt.step(); sched.step()
        net.eval()
        with torch.no_grad():
            correct = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000))
        accs.append(correct / len(xte))
    print(json.dumps({'framework': 'pytorch', 'version': torch.__version__, 'threads': a.threads, 'epochs': a.epochs,
                      'wall_s': round(time.perf_counter() - start, 2), 'test_accuracy': accs}))

if __name__ == '__main__':
    main()
