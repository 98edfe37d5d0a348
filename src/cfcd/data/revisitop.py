"""Revisited Oxford / Paris and the 1M distractors, in revisitop's directory layout.

    <root>/roxford5k/gnd_roxford5k.pkl   <root>/roxford5k/jpg/<imlist name>.jpg
    <root>/rparis6k/gnd_rparis6k.pkl     <root>/rparis6k/jpg/<imlist name>.jpg
    <root>/revisitop1m/revisitop1m.txt   <root>/revisitop1m/jpg/<line of the txt>

A ``gnd_*.pkl`` is a dict: ``imlist`` (database image names), ``qimlist`` (query image names)
and ``gnd``, one dict per query with ``bbx`` (x0, y0, x1, y1) and the 0-based database
indices ``easy``, ``hard`` and ``junk``. It is read with ``cfcd.safe_pickle`` so that a
tampered file cannot run code. The +1M setting appends the distractors after the database,
so the gnd indices stay valid.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, InputError, NotFound

log = logging.getLogger(__name__)

DATASETS = ("roxford5k", "rparis6k", "revisitop1m")
DISTRACTORS = "revisitop1m"
# Serves every file as <mirror>/<dataset>/<file name> instead of its URL (tests, local copies).
MIRROR_ENV = "CFCD_REVISITOP_MIRROR"

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class RevisitopDataset:
    """A dataset's database images, its query images with their boxes, and its ground truth.

    ``gnd`` is the pickle's list (empty for the distractors); ``query_crops`` is what the
    extractor takes for queries, which the protocol crops to their box before anything else.
    """

    name: str
    images: list[Path]
    queries: list[Path]
    bboxes: list[BBox]
    gnd: list[dict]

    @property
    def query_crops(self) -> list[tuple[Path, BBox]]:
        return list(zip(self.queries, self.bboxes))


def _check_name(name: str) -> str:
    if name.lower() not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name.lower()


def _missing(path: Path, name: str, root: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path} not found; run `cfcd data download {name} --root {root}`")


def read_gnd(path: str | Path) -> dict:
    """The ``gnd_<dataset>.pkl`` dict, checked for the fields the protocol uses."""
    from ..safe_pickle import load_pickle  # numpy: not needed to list the datasets (cfcd data --help)

    cfg = load_pickle(path)
    if not isinstance(cfg, dict) or not {"imlist", "qimlist", "gnd"} <= cfg.keys():
        raise InputError(f"{path}: not a revisitop ground-truth file (expected a dict with imlist, qimlist, gnd)")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise InputError(f"{path}: {len(cfg['gnd'])} gnd entries for {len(cfg['qimlist'])} queries")
    for i, query in enumerate(cfg["gnd"]):
        if not {"bbx", "easy", "hard", "junk"} <= set(query):
            raise InputError(f"{path}: gnd entry {i} lacks one of bbx, easy, hard, junk")
    return cfg


def read_imlist(path: str | Path) -> list[str]:
    """Non-empty lines of an image list such as ``revisitop1m.txt``."""
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not names:
        raise InputError(f"{path}: empty image list")
    return names


def load_dataset(root: str | Path, name: str) -> RevisitopDataset:
    """Read ``<root>/<name>`` (see the module docstring for the layout).

    Every image of ROxf / RPar must exist; for the 1M distractors only the list and the
    ``jpg`` folder are checked, as a million file lookups would dominate the load.
    """
    root, name = Path(root), _check_name(name)
    data_dir = root / name
    jpg = data_dir / "jpg"
    if name == DISTRACTORS:
        imlist = data_dir / f"{name}.txt"
        if not imlist.is_file():
            raise _missing(imlist, name, root)
        if not jpg.is_dir():
            raise _missing(jpg, name, root)
        return RevisitopDataset(name, [jpg / n for n in read_imlist(imlist)], [], [], [])
    gnd_path = data_dir / f"gnd_{name}.pkl"
    if not gnd_path.is_file():
        raise _missing(gnd_path, name, root)
    cfg = read_gnd(gnd_path)
    images = [jpg / f"{n}.jpg" for n in cfg["imlist"]]
    queries = [jpg / f"{n}.jpg" for n in cfg["qimlist"]]
    absent = [p for p in images + queries if not p.is_file()]
    if absent:
        raise NotFound(
            f"{len(absent)} images of {name} are missing, e.g. {absent[0]}; "
            f"run `cfcd data download {name} --root {root}`"
        )
    bboxes = [tuple(float(v) for v in q["bbx"]) for q in cfg["gnd"]]
    return RevisitopDataset(name, images, queries, bboxes, list(cfg["gnd"]))


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None = None  # None where no published digest exists; the file is then checked by reading it

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: its list (gnd pickle or txt) and its image archives.

    ``flatten``: keep only the file names of archive members (the Oxford and Paris archives
    nest images by landmark, their gnd names are flat); otherwise keep the member paths.
    """

    listing: RemoteFile
    archives: tuple[RemoteFile, ...]
    flatten: bool


_GND = "http://cmp.felk.cvut.cz/revisitop/data/datasets"
_OXFORD = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings"
_PARIS = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings"
_R1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
R1M_ARCHIVES = 100

# The URLs of revisitop's download.py.
SOURCES = {
    "roxford5k": Source(
        RemoteFile(f"{_GND}/roxford5k/gnd_roxford5k.pkl"),
        (RemoteFile(f"{_OXFORD}/oxbuild_images-v1.tgz"),),
        flatten=True,
    ),
    "rparis6k": Source(
        RemoteFile(f"{_GND}/rparis6k/gnd_rparis6k.pkl"),
        (RemoteFile(f"{_PARIS}/paris_1-v1.tgz"), RemoteFile(f"{_PARIS}/paris_2-v1.tgz")),
        flatten=True,
    ),
    "revisitop1m": Source(
        RemoteFile(f"{_R1M}/revisitop1m.txt"),
        tuple(RemoteFile(f"{_R1M}/jpg/revisitop1m.{i}.tar.gz") for i in range(1, R1M_ARCHIVES + 1)),
        flatten=False,
    ),
}


class UnsafeArchiveError(InputError):
    """An archive member that would land outside the destination folder."""


def _url(remote: RemoteFile, name: str) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{name}/{remote.filename}" if mirror else remote.url


def extract_archive(archive: str | Path, dest: str | Path, flatten: bool) -> int:
    """Write the regular files of a tar archive (any compression) under ``dest``; their count.

    Stricter than tarfile's ``filter='data'``: a member with an absolute path or a ``..``
    component raises ``UnsafeArchiveError``; links, devices and permissions are never
    created, only the bytes of regular files are written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            rel = PurePosixPath(member.name)
            if rel.is_absolute() or ".." in rel.parts:
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} points outside the folder; this is not a revisitop archive, delete it")
            target = dest / (rel.name if flatten else rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


def download_dataset(name: str, root: str | Path, progress: bool = True) -> Path:
    """Download ``name`` into ``<root>/<name>`` in revisitop's layout; returns that folder.

    Files go through ``cfcd.download.download`` (resumes ``.part`` files, checks ``sha256``
    when one is known). Without a digest a file is checked by reading it: the gnd pickle must
    load as ground truth and an archive must extract to its end; a damaged file is deleted so
    that the next run fetches it again. Each archive is deleted once extracted and leaves a
    marker ``.<archive>.extracted``, so rerunning after an interruption skips finished work.
    Set ``CFCD_REVISITOP_MIRROR`` to fetch ``<mirror>/<name>/<file name>`` instead.
    """
    from ..download import DownloadError, download

    root, name = Path(root), _check_name(name)
    source = SOURCES[name]
    data_dir = root / name
    listing = download(_url(source.listing, name), data_dir / source.listing.filename, source.listing.sha256, progress)
    check = read_imlist if name == DISTRACTORS else read_gnd
    try:
        check(listing)
    except (ValueError, UnicodeDecodeError) as err:
        listing.unlink()
        raise DownloadError(f"{err}; deleted it, run `cfcd data download {name} --root {root}` again") from err
    for remote in source.archives:
        marker = data_dir / f".{remote.filename}.extracted"
        if marker.exists():
            continue
        archive = download(_url(remote, name), data_dir / remote.filename, remote.sha256, progress)
        log.info("extracting %s", archive)
        try:
            extract_archive(archive, data_dir / "jpg", source.flatten)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            archive.unlink()
            raise DownloadError(
                f"{archive}: damaged archive ({err}); deleted it, run `cfcd data download {name} --root {root}` again"
            ) from err
        marker.touch()
        archive.unlink()
    return data_dir
