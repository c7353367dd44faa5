#!/usr/bin/env python
"""The yardstick for capsnet's speed: the same two architectures in plain,
idiomatic PyTorch (nn.Conv2d, torch.matmul, autograd), tuned for neither
side. Prints one JSON line with the fields of bench/benchmark.py.

    pip install -e ".[bench]"         # the torch version of docs/speed.md
    python bench/torch_reference.py --model capsnet --batch 128
    python bench/torch_reference.py --model baseline --batch 32 --steps 3

capsnet: conv1 256@9x9 -> PrimaryCaps 32x8-D @9x9 stride 2 (1152 capsules)
-> DigitCaps 10x16-D from one W_ij per primary capsule and class, 3
iterations of dynamic routing -> lengths; decoder 160-512-1024-784 from the
masked capsules. Loss: margin loss (0.9, 0.1, 0.5) summed over classes plus
0.0005 x the summed squared reconstruction error, averaged over the batch.
baseline: three 5x5 convolutions (256, 256, 128, same padding), fully
connected 328 and 192, dropout before the 10 logits, cross-entropy.
Both train with Adam (step size 1e-3) on random MNIST-shaped batches.
"""
import argparse
import json
import platform
import resource
import time

import torch
from torch import nn
from torch.nn import functional as F


def squash(s, dim=-1):
    """|s|^2 / (1 + |s|^2) * s / |s|."""
    norm2 = (s * s).sum(dim, keepdim=True)
    return norm2 / (1 + norm2) * s / torch.sqrt(norm2 + 1e-9)


class CapsNet(nn.Module):
    def __init__(self, routing=3, classes=10):
        super().__init__()
        self.routing = routing
        self.conv1 = nn.Conv2d(1, 256, 9)
        self.primary = nn.Conv2d(256, 32 * 8, 9, stride=2)
        # u_hat_j|i = W_ij u_i: (I=1152, J, 16, 8)
        self.W = nn.Parameter(0.01 * torch.randn(1152, classes, 16, 8))
        self.decoder = nn.Sequential(
            nn.Linear(16 * classes, 512), nn.ReLU(),
            nn.Linear(512, 1024), nn.ReLU(),
            nn.Linear(1024, 784), nn.Sigmoid())

    def capsules(self, x):
        """x (N, 1, 28, 28) -> digit capsules v (N, J, 16)."""
        h = F.relu(self.conv1(x))                          # N, 256, 20, 20
        u = self.primary(h)                                # N, 256, 6, 6
        n = len(x)
        u = u.view(n, 32, 8, 6, 6).permute(0, 1, 3, 4, 2).reshape(n, -1, 8)
        u = squash(u)                                      # N, I, 8
        # u_hat_j|i = W_ij u_i: one matmul batched over the I capsules
        i, j, d, k = self.W.shape
        u_hat = torch.matmul(u.transpose(0, 1),            # I, N, J*16
                             self.W.view(i, j * d, k).transpose(1, 2))
        u_hat = u_hat.view(i, n, j, d).permute(1, 2, 0, 3).contiguous()
        b = torch.zeros(n, j, i)                           # N, J, I
        for r in range(self.routing):
            c = F.softmax(b, dim=1)                        # over the parents
            v = squash(torch.matmul(c.unsqueeze(2), u_hat).squeeze(2))
            if r < self.routing - 1:                       # v: N, J, 16
                b = b + torch.matmul(u_hat, v.unsqueeze(-1)).squeeze(-1)
        return v

    def forward(self, x, t=None):
        """-> lengths (N, J) and the reconstruction (N, 784) from capsule t
        (the longest where t is None), as capsnet's model does."""
        v = self.capsules(x)
        lengths = v.norm(dim=-1)
        if t is None:
            t = lengths.argmax(1)
        mask = F.one_hot(t, lengths.shape[1]).float()      # N, J
        return lengths, self.decoder((v * mask[..., None]).flatten(1))

    def loss(self, x, t):
        lengths, reconstruction = self(x, t)
        present = F.one_hot(t, lengths.shape[1]).float()
        margin = (present * F.relu(0.9 - lengths) ** 2 +
                  0.5 * (1 - present) * F.relu(lengths - 0.1) ** 2).sum(1)
        error = ((reconstruction - x.flatten(1)) ** 2).sum(1)
        return (margin + 0.0005 * error).mean()


class Baseline(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 256, 5, padding=2), nn.ReLU(),
            nn.Conv2d(256, 256, 5, padding=2), nn.ReLU(),
            nn.Conv2d(256, 128, 5, padding=2), nn.ReLU())
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 28 * 28, 328), nn.ReLU(),
            nn.Linear(328, 192), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(192, classes))

    def forward(self, x):
        return self.fc(self.convs(x))

    def loss(self, x, t):
        return F.cross_entropy(self(x), t)


def timed(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='capsnet',
                   choices=['capsnet', 'baseline'])
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--routing', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    model = CapsNet(args.routing) if args.model == 'capsnet' else Baseline()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(args.batch, 1, 28, 28)
    t = torch.randint(0, 10, (args.batch,))

    def train_step():
        model.train()
        optimizer.zero_grad()
        model.loss(x, t).backward()
        optimizer.step()

    def eval_step():
        model.eval()
        with torch.no_grad():
            model(x)

    train_times = timed(train_step, args.warmup, args.steps)
    eval_times = timed(eval_step, args.warmup, args.steps)
    print(json.dumps({
        'impl': '{} (torch {}, {} threads)'.format(
            args.model, torch.__version__, torch.get_num_threads()),
        'batch': args.batch,
        'routing': args.routing if args.model == 'capsnet' else None,
        'warmup': args.warmup, 'steps': args.steps,
        'params': sum(p.numel() for p in model.parameters()),
        'train_img_s': round(args.batch * args.steps / sum(train_times), 2),
        'eval_img_s': round(args.batch * args.steps / sum(eval_times), 2),
        'train_step_s': [round(s, 4) for s in train_times],
        'eval_step_s': [round(s, 4) for s in eval_times],
        'max_rss_mib': round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        'machine': platform.machine(),
    }))


if __name__ == '__main__':
    main()
