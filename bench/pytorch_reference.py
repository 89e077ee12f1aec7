#!/usr/bin/python3
"""PyTorch reference for the training benchmark: the same model, data, batch,
learning rate and thread count as `fedsgd-daemon train`, timed the same way
(training loop only, data already in memory). Prints one JSON line.

--model takes fedsgd's text form for a cnn (cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10,
see shared/include/fedsgd/model.h); without it the model is mlp:784-HIDDEN-10."""
import argparse
import gzip
import json
import os
import re
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


def cnn_from_text(text):
    """torch.nn.Sequential for fedsgd's cnn text form, and its input shape."""
    tokens = text.split(":", 1)[1].split("-")
    shape = [int(v) for v in tokens[0].split("x")]
    channels, layers, features, dense = shape[0], [], None, []
    for token in tokens[1:-1]:
        conv = re.fullmatch(r"c(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?", token)
        if conv:
            out, k, s, pad = (int(g) if g else d for g, d in zip(conv.groups(), (0, 0, 1, 0)))
            layers += [torch.nn.Conv2d(channels, out, k, stride=s, padding=pad), torch.nn.ReLU()]
            channels = out
        elif token.startswith("p"):
            layers.append(torch.nn.MaxPool2d(int(token[1:])))
        else:
            dense.append(int(token[1:]))
    with torch.no_grad():
        features = torch.nn.Sequential(*layers)(torch.zeros(1, *shape)).numel()
    layers.append(torch.nn.Flatten())
    for width in dense:
        layers += [torch.nn.Linear(features, width), torch.nn.ReLU()]
        features = width
    layers.append(torch.nn.Linear(features, int(tokens[-1])))
    return torch.nn.Sequential(*layers), shape


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--model", default="", help="a cnn in fedsgd's text form")
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
    if a.model:
        model, shape = cnn_from_text(a.model)
        x, tx = x.reshape(-1, *shape), tx.reshape(-1, *shape)
    else:
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
        # In batches: a cnn's feature maps of all 10,000 test images at once
        # would take GBs.
        correct = sum((model(tx[i:i + 1000]).argmax(1) == ty[i:i + 1000]).sum().item()
                      for i in range(0, tx.shape[0], 1000))
        acc = correct / tx.shape[0]
    print(json.dumps({"framework": "pytorch " + torch.__version__, "model": a.model or
                      f"mlp:784-{a.hidden}-10", "threads": a.threads,
                      "batch": a.batch, "samples": samples, "seconds": seconds,
                      "samples_per_second": samples / seconds,
                      "train_loss": total / batches, "test_accuracy": acc}))


if __name__ == "__main__":
    main()
