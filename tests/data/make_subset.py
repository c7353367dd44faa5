"""Cut the MNIST fixture under tests/data/mnist from the full files.

    python tests/data/make_subset.py ../shared/data/mnist tests/data/mnist

Keeps the first 2,000 training and the first 500 test images (real MNIST,
Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0), as
gzipped IDX files in the standard layout.
"""
import gzip
import os
import sys

KEEP = {'train': 2000, 't10k': 500}


def main(src, dst):
    os.makedirs(dst, exist_ok=True)
    for prefix, n in KEEP.items():
        for kind, header, item in (('images-idx3', 16, 784),
                                   ('labels-idx1', 8, 1)):
            name = '{}-{}-ubyte.gz'.format(prefix, kind)
            with gzip.open(os.path.join(src, name)) as f:
                raw = f.read()
            head = bytearray(raw[:header])
            head[4:8] = n.to_bytes(4, 'big')                 # item count
            body = raw[header:header + n * item]
            with gzip.GzipFile(os.path.join(dst, name), 'wb', mtime=0) as f:
                f.write(bytes(head) + body)


if __name__ == '__main__':
    main(*sys.argv[1:])
