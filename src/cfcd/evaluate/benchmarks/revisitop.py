"""Revisited Oxford and Paris (Radenovic et al., CVPR 2018): queries cropped to their box,
Easy / Medium / Hard protocols, +1M distractors appended after the database."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ...data import revisitop
from ...settings import PAPER_SETTINGS
from ..metrics import evaluate_revisitop, format_report
from .base import Benchmark

# The protocol's image preparation: the published numbers come from the official extractor,
# which truncates query boxes with int() and resizes with OpenCV (cfcd.data.images).
PREPARATION = "official"
# The protocol's extraction: the CFCD paper's five scales at the images' own size, prepared so.
SETTINGS = replace(PAPER_SETTINGS, preparation=PREPARATION)
CROP_POLICY = {True: "queries cropped to their box", False: "queries uncropped (full image)", None: "as in the descriptor file"}


@dataclass(frozen=True)
class RevisitopBenchmark(Benchmark):
    cropped: bool = True

    def query_policy(self, cropped: bool | None) -> str:
        return CROP_POLICY[cropped]

    def score(self, ranks):
        return evaluate_revisitop(ranks, self.gnd)

    def report(self, result, title: str) -> str:
        return format_report(result, title)


def load(name: str, root, crop: bool = True) -> RevisitopBenchmark:
    """``<root>/<name>`` in revisitop's layout; ``crop``: the queries are their boxes (the protocol).
    Images are prepared as the official CFCD extractor does, whatever the model's own preparation."""
    data = revisitop.load_dataset(root, name)
    queries = data.query_crops if crop else data.queries
    return RevisitopBenchmark(data.name, data.images, queries, data.gnd, settings=SETTINGS, cropped=crop)


def distractor_images(root) -> list[Path]:
    """The revisitop1m images under ``root``, in the order their descriptors follow the database."""
    return revisitop.load_dataset(root, revisitop.DISTRACTORS).images
