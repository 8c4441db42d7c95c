#!/usr/bin/env python3
"""Cut the embedded mini CIFAR-10 (``prdarts_timm/data_files/cifar10_mini.tar``) from the JPEG copy.

Takes the first ``--train-per-class`` / ``--test-per-class`` images of every class, by sorted file name,
from ``cifar10/{train,test}/<class>/NNNN.jpg`` in the source tar.gz and writes them, with their JPEG bytes
unchanged, to an uncompressed tar in ImageFolder layout (``train/<class>/NNNN.jpg``, ``test/<class>/...``).
Members are sorted, with mtime 0, uid/gid 0, no user/group names and mode 0644, so the output is
byte-reproducible. The output is written to a temporary file and moved into place.

    python recipes/make_mini_cifar10.py            # defaults: ../shared/data/cifar10-jpeg.tar.gz -> package
"""

import argparse
import hashlib
import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
DEFAULT_OUT = REPO / 'prdarts_timm' / 'data_files' / 'cifar10_mini.tar'
SPLITS = ('train', 'test')


def read_source(source: Path) -> Dict[Tuple[str, str], Dict[str, bytes]]:
    """All JPEGs of the source tar.gz: {(split, class): {file name: bytes}}."""
    images: Dict[Tuple[str, str], Dict[str, bytes]] = {}
    with tarfile.open(source, 'r:gz') as tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.split('/')
            if len(parts) != 4 or parts[0] != 'cifar10' or parts[1] not in SPLITS:
                continue
            _, split, cls, name = parts
            if not name.lower().endswith('.jpg'):
                continue
            images.setdefault((split, cls), {})[name] = tar.extractfile(member).read()
    if not images:
        raise SystemExit(f'error: no cifar10/{{train,test}}/<class>/*.jpg members found in {source}')
    return images


def make_mini(source: Path, out: Path, train_per_class: int, test_per_class: int) -> str:
    """Write the mini tar to ``out`` (atomically) and return its sha256."""
    per_class = {'train': train_per_class, 'test': test_per_class}
    images = read_source(source)
    classes = sorted({cls for _, cls in images})
    members = []
    for split in SPLITS:
        for cls in classes:
            files = images.get((split, cls), {})
            n = per_class[split]
            if len(files) < n:
                raise SystemExit(f'error: {split}/{cls} has {len(files)} images in {source}, {n} asked for')
            for name in sorted(files)[:n]:
                members.append((f'{split}/{cls}/{name}', files[name]))
    members.sort()

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + '.', suffix='.tmp', dir=out.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            with tarfile.open(fileobj=f, mode='w', format=tarfile.USTAR_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = 0
                    info.mode = 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ''
                    tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--source', type=Path, default=DEFAULT_SOURCE,
                        help='CIFAR-10 JPEG tar.gz (default: ../shared/data/cifar10-jpeg.tar.gz from the repo root)')
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT, help='output tar (default: the package fixture)')
    parser.add_argument('--train-per-class', type=int, default=200)
    parser.add_argument('--test-per-class', type=int, default=100)
    args = parser.parse_args(argv)
    if args.train_per_class < 1 or args.test_per_class < 1:
        parser.error('--train-per-class and --test-per-class must be >= 1')
    if not args.source.is_file():
        parser.error(f'source not found: {args.source}')
    digest = make_mini(args.source, args.out, args.train_per_class, args.test_per_class)
    print(f'{args.out}  {args.out.stat().st_size} bytes  sha256 {digest}')


if __name__ == '__main__':
    main(sys.argv[1:])
