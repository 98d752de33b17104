"""PyTorch side of tests/interop.rs: convoy's LeNet as a torch.nn.Module with the same
parameter names, loaded from / saved to safetensors with `safetensors.torch`.

  python3 tests/interop/torch_lenet.py logits MODEL.safetensors OUT.json
      loads a convoy checkpoint's model.safetensors with load_state_dict(strict=True) and writes
      the logits of the first 100 MNIST test images and the accuracy on all 10,000.
  python3 tests/interop/torch_lenet.py save OUT.safetensors OUT.json
      saves a freshly initialised torch LeNet (torch.manual_seed(0), PyTorch's default init) with
      save_file(state_dict) for `convoy train --init-from`, and writes its logits and accuracy.

MNIST is read from data/mnist (run from the repository root) and normalised as convoy does:
(x / 255 - 0.1307) / 0.3081."""
import gzip, json, sys
import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(3136, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def mnist_test():
    with gzip.open('data/mnist/t10k-images-idx3-ubyte.gz') as f:
        imgs = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open('data/mnist/t10k-labels-idx1-ubyte.gz') as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (imgs.astype(np.float32) / np.float32(255.0) - np.float32(0.1307)) / np.float32(0.3081)
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def report(net, out):
    x, y = mnist_test()
    net.eval()
    with torch.no_grad():
        logits = net(x[:100])
        correct = sum(int((net(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
    json.dump({'logits': logits.numpy().astype(float).tolist(), 'accuracy': correct / len(y)}, open(out, 'w'))


def main():
    torch.set_num_threads(1)
    cmd, path, out = sys.argv[1:4]
    net = LeNet()
    if cmd == 'logits':
        net.load_state_dict(load_file(path), strict=True)
    elif cmd == 'save':
        torch.manual_seed(0)
        net = LeNet()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    else:
        sys.exit(f'unknown command {cmd}')
    report(net, out)


if __name__ == '__main__':
    main()
