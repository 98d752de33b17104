"""Golden 10-step loss trajectory of LeNet on MNIST in PyTorch, from convoy's own initial weights.

Reproduces convoy's SplitMix64 generator and PyTorch-default (kaiming-uniform a=sqrt(5)) init in
numpy float32, so both frameworks start from identical weights; then trains 10 SGD steps
(momentum 0.9, lr 0.01, batch 64) on training images 0..640 in file order and prints the mean loss
of each step. Run from the repo root: python3 tests/golden/lenet_trajectory.py
The printed numbers are pasted into tests/train_mnist.rs (ten_step_trajectory_matches_pytorch)."""
import gzip, numpy as np, torch, torch.nn as nn

M = (1 << 64) - 1
class Rng:
    def __init__(s, seed): s.state = seed & M
    def next_u64(s):
        s.state = (s.state + 0x9e3779b97f4a7c15) & M
        z = s.state
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
        return z ^ (z >> 31)
    def uniform(s, lo, hi):
        u = np.float32(s.next_u64() >> 40) * np.float32(1.0 / (1 << 24))
        return np.float32(lo + np.float32(hi - lo) * u)

def fill(rng, shape, fan_in):
    b = np.float32(1.0) / np.sqrt(np.float32(fan_in))
    n = int(np.prod(shape))
    return np.array([rng.uniform(-b, b) for _ in range(n)], dtype=np.float32).reshape(shape)

net = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, 10))
rng = Rng(42)
with torch.no_grad():
    for m in net:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.from_numpy(fill(rng, tuple(m.weight.shape), fan_in)))
            m.bias.copy_(torch.from_numpy(fill(rng, tuple(m.bias.shape), fan_in)))

with gzip.open('data/mnist/train-images-idx3-ubyte.gz') as f:
    imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:640]
with gzip.open('data/mnist/train-labels-idx1-ubyte.gz') as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:640]
x_all = (imgs.astype(np.float32) / np.float32(255.0) - np.float32(0.1307)) / np.float32(0.3081)
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
losses = []
for s in range(10):
    x = torch.from_numpy(x_all[s * 64:(s + 1) * 64].copy())
    y = torch.from_numpy(labels[s * 64:(s + 1) * 64].astype(np.int64))
    opt.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward(); opt.step()
    losses.append(loss.item())
print('losses', [f'{l:.7f}' for l in losses])
print('fc2.bias after 10 steps', [f'{v:.7f}' for v in net[9].bias.detach().numpy()])
