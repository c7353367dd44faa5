#!/usr/bin/env python
"""Alternate this project's benchmark with a reference (A B A B ...) and
print the medians and their ratio as a markdown table.

    pip install -e ".[bench]"         # torch, for the default references
    python bench/side_by_side.py --pairs 3
    python bench/side_by_side.py --model baseline --batch 32 --steps 3 \\
        --warmup 1
    python bench/side_by_side.py --reference "python DIR/bench/benchmark.py"

The reference is by default the same model in plain PyTorch
(bench/torch_reference.py); --reference takes any command that prints one
JSON line with train_img_s, eval_img_s and max_rss_mib, such as this
project's benchmark.py in a `git worktree` of older code, and --command
replaces this project's side the same way. Both get the same
--batch/--steps/--warmup. The machines here are shared and noisy, so only
the ratio of runs made side by side means much.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys

KEYS = ('train_img_s', 'eval_img_s', 'max_rss_mib')


def run(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--model', default='capsnet',
                   choices=['capsnet', 'baseline'], help='the model of both')
    p.add_argument('--reference', help='command line of the reference '
                   'benchmark (default: bench/torch_reference.py --model '
                   'MODEL)')
    p.add_argument('--command', help="command line of this project's side "
                   '(default: bench/benchmark.py --model MODEL -g GPU)')
    p.add_argument('--pairs', type=int, default=3)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('-g', '--gpu', type=int, default=-1,
                   help="this project's device; the reference picks its own")
    return p


def main():
    args = build_parser().parse_args()

    common = ['--batch', str(args.batch), '--steps', str(args.steps),
              '--warmup', str(args.warmup)]
    here = os.path.dirname(os.path.abspath(__file__))
    ours = (shlex.split(args.command) if args.command else [
        sys.executable, os.path.join(here, 'benchmark.py'), '-g',
        str(args.gpu), '--model', args.model]) + common
    reference = (shlex.split(args.reference) if args.reference else [
        sys.executable, os.path.join(here, 'torch_reference.py'),
        '--model', args.model]) + common
    results = {args.model: [], 'reference': []}
    for _ in range(args.pairs):
        results[args.model].append(run(ours))
        results['reference'].append(run(reference))
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in KEYS}
               for name, runs in results.items()}
    print('| implementation | train img/s | eval img/s | peak RSS MiB |')
    print('| --- | --- | --- | --- |')
    for name in results:
        m = medians[name]
        print('| {} | {:.1f} | {:.1f} | {:.0f} |'.format(
            name, *(m[k] for k in KEYS)))
    ratio = {k: medians[args.model][k] / medians['reference'][k]
             for k in KEYS}
    print('| ratio | {:.2f}x | {:.2f}x | {:.2f}x |'.format(
        *(ratio[k] for k in KEYS)))
    print(json.dumps({'pairs': args.pairs, 'runs': results}))


if __name__ == '__main__':
    main()
