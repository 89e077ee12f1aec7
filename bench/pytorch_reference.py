#!/usr/bin/python3
"""PyTorch reference for the training benchmark: the same model, data, batch,
learning rate and thread count as `fedsgd-daemon train`, timed the same way
(training loop only, data already in memory). Prints one JSON line."""
import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch


def load_idx(images_path, labels_path):
    with gzip.open(images_path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, images_path
        x = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows * cols)
    with gzip.open(labels_path, "rb") as f:
        magic, n2 = struct.unpack(">II", f.read(8))
        assert magic == 2049 and n2 == n, labels_path
        y = np.frombuffer(f.read(), dtype=np.uint8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, y = load_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"),
                    os.path.join(a.data, "train-labels-idx1-ubyte.gz"))
    tx, ty = load_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"),
                      os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"))
    model = torch.nn.Sequential(torch.nn.Linear(784, a.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(a.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    n = x.shape[0]
    start = time.perf_counter()
    samples = 0
    for _ in range(a.epochs):
        perm = torch.randperm(n)
        total, batches = 0.0, 0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
            samples += idx.shape[0]
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    print(json.dumps({"framework": "pytorch " + torch.__version__, "threads": a.threads,
                      "batch": a.batch, "samples": samples, "seconds": seconds,
                      "samples_per_second": samples / seconds,
                      "train_loss": total / batches, "test_accuracy": acc}))


if __name__ == "__main__":
    main()
