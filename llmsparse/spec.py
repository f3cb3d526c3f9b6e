"""Parsing and validation of the small string specs the CLI and recipes take.

``SparsitySpec``: ``"0.5"`` (unstructured ratio) or ``"2:4"`` (N:M: at most N nonzero
weights in every M consecutive weights along the input dimension, NVIDIA's convention).
``CalibSpec``: ``"c4:128x2048"`` (source, number of sequences, tokens per sequence).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class SparsitySpec:
    ratio: float | None = None  # fraction of weights set to zero (unstructured)
    n: int | None = None  # kept weights per group (N:M)
    m: int | None = None  # group size along the input dimension

    @property
    def is_nm(self) -> bool:
        return self.n is not None

    @property
    def target(self) -> float:
        """Fraction of zeros this spec asks for."""
        return 1.0 - self.n / self.m if self.is_nm else float(self.ratio)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"{self.ratio:g}"

    @classmethod
    def parse(cls, text: str | float | "SparsitySpec") -> "SparsitySpec":
        if isinstance(text, SparsitySpec):
            return text
        s = str(text).strip()
        if ":" in s:
            mt = re.fullmatch(r"(\d+)\s*:\s*(\d+)", s)
            if not mt:
                raise UserError(f"sparsity '{s}' is not a valid N:M pattern; write it like 2:4 or 4:8")
            n, m = int(mt.group(1)), int(mt.group(2))
            if m < 2 or n < 1 or n >= m:
                raise UserError(
                    f"sparsity '{s}' needs 1 <= N < M (N kept of every M weights); try 2:4 or 4:8"
                )
            return cls(n=n, m=m)
        try:
            r = float(s)
        except ValueError:
            raise UserError(
                f"sparsity '{s}' is neither a ratio nor an N:M pattern; write 0.5 or 2:4"
            ) from None
        if not (0.0 < r < 1.0):
            raise UserError(f"sparsity {s} is outside (0, 1); give the fraction of weights to zero, e.g. 0.5")
        return cls(ratio=r)

    def check_width(self, in_features: int, name: str = "") -> None:
        if self.is_nm and in_features % self.m:
            where = f" of {name}" if name else ""
            raise UserError(
                f"input width {in_features}{where} is not divisible by M={self.m} of {self}; "
                f"choose another pattern or --ignore that layer"
            )


_CALIB_RE = re.compile(r"(?P<src>.+?)(?::(?P<n>-?\d+)x(?P<s>-?\d+))?")


@dataclass(frozen=True)
class CalibSpec:
    source: str = "c4"
    nsamples: int = 128
    seqlen: int = 2048

    def __str__(self) -> str:
        return f"{self.source}:{self.nsamples}x{self.seqlen}"

    @classmethod
    def parse(cls, text: str | "CalibSpec") -> "CalibSpec":
        if isinstance(text, CalibSpec):
            return text
        s = str(text).strip()
        # a path may itself contain ':'; the counts are the last ':NxS' part
        mt = re.fullmatch(r"(?P<src>.+):(?P<n>-?\d+)x(?P<s>-?\d+)", s)
        if mt:
            src, n, sl = mt.group("src"), int(mt.group("n")), int(mt.group("s"))
        elif re.search(r":-?\d+(x|$)", s):
            raise UserError(f"calibration spec '{s}' is malformed; write SOURCE:NSAMPLESxSEQLEN, e.g. c4:128x2048")
        else:
            src, n, sl = s, cls.nsamples, cls.seqlen
        if not src:
            raise UserError(f"calibration spec '{s}' names no source; write e.g. c4:128x2048")
        if n < 1:
            raise UserError(f"calibration nsamples is {n}; it must be at least 1 (e.g. c4:128x2048)")
        if sl < 2:
            raise UserError(f"calibration seqlen is {sl}; it must be at least 2 (e.g. c4:128x2048)")
        return cls(source=src, nsamples=n, seqlen=sl)
