"""The packed llmsparse checkpoint: compressed sparse safetensors (specification: ``docs/format.md``).

A packed checkpoint is a directory::

    config.json                      the model's Hugging Face config + a "sparsity" section
    model.packed.safetensors         (or model-0000K-of-0000N.packed.safetensors + the index below)
    model.packed.safetensors.index.json
    llmsparse.json                   how it was made (record) + a "format" summary
    generation_config.json, tokenizer files

Every floating weight of two or more dimensions outside the embeddings and the output head is
stored in the smallest encoding it satisfies (:mod:`llmsparse.formats.codecs`): N:M (values +
bit-packed positions, the layout of :mod:`llmsparse.formats.nm` that the 2:4 kernels read),
bitmask (unstructured), or dense. Everything else is stored unchanged.

Reading and writing stream tensor by tensor: writing holds the model plus one shard of packed
tensors; reading builds the model skeleton without initialising weights and assigns each tensor
as it is decoded, so the whole model is never held twice. Every file is checked (header, shapes
against the metadata, pattern validity, per-tensor checksums) and every problem is a one-line
:class:`~llmsparse.errors.UserError` naming the tensor; a model is returned only when everything
decoded.

A packed directory is *not* loadable by ``AutoModelForCausalLM.from_pretrained`` (there is no
``model.safetensors``); ``llmsparse.load`` reads it, and ``llmsparse export --format dense`` turns
it into a plain Hugging Face checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from . import codecs

FORMAT_NAME = "llmsparse-packed"
FORMAT_VERSION = 1
SINGLE_FILE = "model.packed.safetensors"
INDEX_FILE = "model.packed.safetensors.index.json"
SHARD_NAME = "model-{i:05d}-of-{n:05d}.packed.safetensors"
DEFAULT_MAX_SHARD_BYTES = 1024**3  # two may be in memory at once (one filling, one being written)
CHECKSUM_KEY = "llmsparse.checksums"

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
}
_NAME_OF = {
    torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8",
    torch.bool: "bool",
}
_DTYPE_OF = {v: k for k, v in _NAME_OF.items()}
_ST_TO_NAME = {k: _NAME_OF[v] for k, v in _ST_DTYPES.items() if v in _NAME_OF}


# ------------------------------------------------------------------ checksums -------------------------

def _bytes_view(t: torch.Tensor):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def checksum(t: torch.Tensor, algo: str | None = None) -> str:
    """``xxh3_64:<hex>`` (when the xxhash package is there) or ``crc32:<hex>`` of the tensor's bytes."""
    if algo is None:
        try:
            import xxhash  # noqa: F401
            algo = "xxh3_64"
        except ImportError:
            algo = "crc32"
    b = _bytes_view(t)
    if algo == "xxh3_64":
        import xxhash

        return "xxh3_64:" + xxhash.xxh3_64_hexdigest(b)
    return "crc32:%08x" % (zlib.crc32(b) & 0xFFFFFFFF)


def _verify(t: torch.Tensor, expected: str | None) -> bool:
    """True when it matches (or when the checksum cannot be computed here: an unknown algorithm)."""
    if not expected:
        return True
    algo = expected.split(":", 1)[0]
    if algo == "xxh3_64":
        try:
            import xxhash  # noqa: F401
        except ImportError:
            return True
    elif algo != "crc32":
        return True
    return checksum(t, algo) == expected


# ------------------------------------------------------------------ detection / metadata --------------

def _read_json(p: Path, what: str) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{p}: {what} is not readable JSON ({str(e).splitlines()[0][:120]}); "
                        "the checkpoint is corrupted, re-export it") from None


def is_packed(path) -> bool:
    """True when ``path`` is a directory holding a packed llmsparse checkpoint (any version)."""
    p = Path(path)
    cfg = p / "config.json"
    if not cfg.is_file():
        return False
    if (p / SINGLE_FILE).is_file() or (p / INDEX_FILE).is_file():
        return True
    try:
        sp = json.loads(cfg.read_text()).get("sparsity")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(sp, dict) and sp.get("format") == FORMAT_NAME


def read_sparsity(path) -> dict:
    """The ``sparsity`` section of ``config.json``, checked for format name and version."""
    p = Path(path)
    cfg = _read_json(p / "config.json", "config.json")
    sp = cfg.get("sparsity")
    if not isinstance(sp, dict) or sp.get("format") != FORMAT_NAME:
        raise UserError(f"{p}/config.json has no '{FORMAT_NAME}' sparsity section; "
                        "the packed checkpoint is incomplete, re-export it")
    ver = sp.get("version")
    if ver != FORMAT_VERSION:
        raise UserError(f"{p}: packed format version {ver!r} is not supported (this llmsparse reads version "
                        f"{FORMAT_VERSION}); upgrade llmsparse or re-export the checkpoint")
    layers = sp.get("layers")
    if not isinstance(layers, dict):
        raise UserError(f"{p}/config.json: sparsity.layers is missing; the checkpoint is corrupted, re-export it")
    return sp


@dataclass
class _Item:
    """One logical tensor: dense (stored as is) or a layer entry with components."""

    name: str
    entry: dict | None  # None: dense
    parts: dict = field(default_factory=dict)  # suffix -> stored name

    @property
    def dense(self) -> bool:
        return self.entry is None or self.entry.get("encoding") == "dense"


@dataclass
class _Plan:
    path: Path
    sparsity: dict
    files: list  # file names in order
    stored: dict  # stored name -> (file, st dtype, shape, nbytes, data offset)
    checksums: dict  # stored name -> checksum
    items: list  # [_Item] in file order


def _open(f: Path):
    from safetensors import safe_open

    if not f.is_file():
        raise UserError(f"{f} is missing; the packed checkpoint is incomplete, re-export it")
    try:
        return safe_open(str(f), framework="pt")
    except Exception as e:  # SafetensorError: truncated or corrupted header/data region
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{f.name}: not a readable safetensors file ({msg}); the checkpoint is truncated "
                        "or corrupted, re-export it") from None


def _header(f: Path) -> tuple[dict, dict]:
    """Raw safetensors header of ``f``: ({name: {dtype, shape, data_offsets}}, metadata)."""
    with open(f, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise UserError(f"{f.name}: file is truncated (no safetensors header); re-export the checkpoint")
        n = int.from_bytes(raw, "little")
        if n > 100 * 1024**2:
            raise UserError(f"{f.name}: safetensors header length {n} is implausible; the file is corrupted")
        hb = fh.read(n)
    try:
        h = json.loads(hb)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{f.name}: safetensors header is not valid JSON; the file is truncated or corrupted, "
                        "re-export the checkpoint") from None
    meta = h.pop("__metadata__", None) or {}
    return h, meta


def _files(path: Path) -> list[str]:
    if (path / INDEX_FILE).is_file():
        idx = _read_json(path / INDEX_FILE, INDEX_FILE)
        wm = idx.get("weight_map")
        if not isinstance(wm, dict):
            raise UserError(f"{path / INDEX_FILE}: no weight_map; the checkpoint is corrupted, re-export it")
        return sorted(set(wm.values()))
    if (path / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    raise UserError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} is there; the packed checkpoint is "
                    "incomplete, re-export it")


def _plan(path) -> _Plan:
    """Everything about a packed checkpoint that its headers tell, checked; no tensor data is read."""
    path = Path(path)
    sp = read_sparsity(path)
    files = _files(path)
    stored, sums = {}, {}
    for fn in files:
        f = path / fn
        if not f.is_file():
            raise UserError(f"{f} is missing; the packed checkpoint is incomplete, re-export it")
        h, meta = _header(f)
        if meta.get("format") != FORMAT_NAME:
            raise UserError(f"{fn}: not an {FORMAT_NAME} file (metadata format {meta.get('format')!r})")
        if meta.get("version") != str(FORMAT_VERSION):
            raise UserError(f"{fn}: packed format version {meta.get('version')!r} is not supported (this llmsparse "
                            f"reads version {FORMAT_VERSION}); upgrade llmsparse or re-export the checkpoint")
        try:
            sums.update(json.loads(meta.get(CHECKSUM_KEY, "{}")))
        except json.JSONDecodeError:
            raise UserError(f"{fn}: checksum table is not valid JSON; the file is corrupted") from None
        size = f.stat().st_size
        end = 8 + int.from_bytes(open(f, "rb").read(8), "little")
        for k, v in h.items():
            if k in stored:
                raise UserError(f"tensor {k} is stored twice ({stored[k][0]} and {fn}); the checkpoint is corrupted")
            try:
                s, e = v["data_offsets"]
                shape = tuple(int(x) for x in v["shape"])
                dt = v["dtype"]
            except (KeyError, TypeError, ValueError):
                raise UserError(f"tensor {k} in {fn}: malformed header entry; the file is corrupted") from None
            if dt not in _ST_DTYPES or _ST_DTYPES[dt] is None:
                raise UserError(f"tensor {k} in {fn}: unknown dtype {dt}")
            es = torch.empty(0, dtype=_ST_DTYPES[dt]).element_size()
            if e - s != math.prod(shape) * es:
                raise UserError(f"tensor {k} in {fn}: {e - s} bytes for shape {list(shape)} {dt}; the file is corrupted")
            if end + e > size:
                raise UserError(f"tensor {k} in {fn}: data runs past the end of the file ({end + e} > {size} bytes); "
                                "the file is truncated, re-export the checkpoint")
            stored[k] = (fn, dt, shape, e - s, s)
    # layers described by the metadata
    items, claimed = [], set()
    for name, entry in sp["layers"].items():
        if not isinstance(entry, dict) or "encoding" not in entry or "shape" not in entry:
            raise UserError(f"tensor {name}: malformed sparsity metadata entry; the checkpoint is corrupted")
        enc = entry["encoding"]
        if enc == "dense":
            continue  # stored under its own name; picked up below
        try:
            expect = codecs.component_shapes(entry)
        except codecs.FormatError as e:
            raise UserError(f"tensor {name}: {e}; this llmsparse reads encodings nm, bitmask and dense "
                            "(upgrade llmsparse)") from None
        except (KeyError, TypeError, ValueError):
            raise UserError(f"tensor {name}: malformed sparsity metadata entry; the checkpoint is corrupted") from None
        ldt = entry.get("dtype")
        if ldt not in _DTYPE_OF:
            raise UserError(f"tensor {name}: unknown dtype {ldt!r} in the sparsity metadata")
        it = _Item(name, entry)
        for suf, (shape, dt) in expect.items():
            sn = name + suf
            if sn not in stored:
                raise UserError(f"tensor {sn} is missing from the files; the checkpoint is incomplete, re-export it")
            fn, sdt, sshape = stored[sn][:3]
            if tuple(sshape) != tuple(shape):
                raise UserError(f"tensor {sn}: shape {list(sshape)} in {fn} disagrees with the metadata "
                                f"({entry.get('pattern')} {list(entry['shape'])} -> {list(shape)})")
            want = dt or ldt
            if _ST_TO_NAME.get(sdt) not in want.split("|"):
                raise UserError(f"tensor {sn}: dtype {_ST_TO_NAME.get(sdt, sdt)} in {fn}, the metadata says {want}")
            it.parts[suf] = sn
            claimed.add(sn)
        items.append(it)
    by_name = {it.name: it for it in items}
    for sn in stored:
        if sn in claimed:
            continue
        if sn in by_name:
            raise UserError(f"tensor {sn} is stored both dense and packed; the checkpoint is corrupted")
        e = sp["layers"].get(sn)
        items.append(_Item(sn, e if e and e.get("encoding") == "dense" else None, {"": sn}))
    for name, entry in sp["layers"].items():
        if entry.get("encoding") == "dense" and name not in stored:
            raise UserError(f"tensor {name} is missing from the files; the checkpoint is incomplete, re-export it")
    order = {fn: i for i, fn in enumerate(files)}
    # read in file order (sequential I/O)
    items.sort(key=lambda it: min((order[stored[sn][0]], stored[sn][4]) for sn in it.parts.values()))
    return _Plan(path, sp, files, stored, sums, items)


class _Mapped:
    """Zero-copy access to the tensors of one checked safetensors file (``mmap``): packed components
    are decoded straight from the page cache; dense tensors are copied out once."""

    def __init__(self, path: Path, plan: _Plan):
        import mmap

        self.plan = plan
        self.f = open(path, "rb")
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None
        self.base = 8 + int.from_bytes(self.f.read(8), "little")

    def get_tensor(self, sn: str, copy: bool = True) -> torch.Tensor:
        import warnings

        _, dt, shape, nbytes, begin = self.plan.stored[sn]
        dtype = _ST_DTYPES[dt]
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        off = self.base + begin
        es = torch.empty(0, dtype=dtype).element_size()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only buffer: we never write through these views
            if off % es:
                t = torch.frombuffer(bytearray(self.mm[off: off + nbytes]), dtype=dtype)
            else:
                t = torch.frombuffer(self.mm, dtype=dtype, count=nbytes // es, offset=off)
        t = t.view(shape)
        return t.clone() if copy else t

    def release(self, sn: str) -> None:
        """Drop the pages of ``sn`` from this process's mapping (they stay in the page cache), so that
        reading a checkpoint does not grow the resident set by the file size."""
        import mmap

        if self.mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        _, _, _, nbytes, begin = self.plan.stored[sn]
        ps = mmap.PAGESIZE
        a = -(-(self.base + begin) // ps) * ps
        b = (self.base + begin + nbytes) // ps * ps
        if b > a:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, a, b - a)
            except (OSError, ValueError):
                pass

    def close(self):
        try:
            if self.mm is not None:
                self.mm.close()
        except BufferError:  # a view is still referenced somewhere: the GC closes it later
            pass
        self.f.close()


def _read_item(plan: _Plan, handles: dict, it: _Item, verify: bool = True) -> torch.Tensor:
    """Read one logical tensor: dense items as stored, packed ones decoded to dense-with-zeros."""
    parts = {}
    for suf, sn in it.parts.items():
        fn = plan.stored[sn][0]
        t = handles[fn].get_tensor(sn, copy=it.dense)
        if verify and not _verify(t, plan.checksums.get(sn)):
            raise UserError(f"tensor {sn}: checksum mismatch in {fn}; the file is corrupted, re-export the checkpoint")
        parts[suf] = t
    try:
        if it.dense:
            return parts[""]
        try:
            return codecs.decode(it.entry, parts)
        except codecs.FormatError as e:
            raise UserError(f"tensor {it.name}: {e}; the checkpoint is corrupted "
                            f"(pattern {it.entry.get('pattern')})") from None
    finally:
        parts.clear()
        for sn in it.parts.values():
            handles[plan.stored[sn][0]].release(sn)


@contextlib.contextmanager
def _handles(plan: _Plan):
    hs = {}
    try:
        for fn in plan.files:
            with _open(plan.path / fn):  # safetensors' own header check
                pass
            hs[fn] = _Mapped(plan.path / fn, plan)
        yield hs
    finally:
        for h in hs.values():
            h.close()


def iter_dense_tensors(path, verify: bool = True):
    """Yield ``(name, dense tensor)`` for every tensor of a packed checkpoint, one at a time, in the
    stored dtype (packed layers decoded to dense-with-zeros)."""
    plan = _plan(path)
    with _handles(plan) as hs:
        for it in plan.items:
            yield it.name, _read_item(plan, hs, it, verify)


# ------------------------------------------------------------------ writing ---------------------------

def parse_size(s) -> int:
    """'2GB', '500MB', '1.5GiB', or a number of bytes."""
    if isinstance(s, (int, float)):
        return int(s)
    t = str(s).strip().upper().replace("IB", "B")
    for suf, mul in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3), ("TB", 1024**4), ("B", 1)):
        if t.endswith(suf):
            try:
                return int(float(t[: -len(suf)]) * mul)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise UserError(f"bad size '{s}'; write e.g. 2GB or 500MB") from None


def parse_pattern(p) -> tuple[int, int] | None:
    """'2:4' -> (2, 4); None / unstructured ratios -> None."""
    if p is None:
        return None
    if isinstance(p, (tuple, list)):
        return int(p[0]), int(p[1])
    from ..spec import SparsitySpec

    try:
        spec = SparsitySpec.parse(str(p))
    except UserError:
        return None
    return (spec.n, spec.m) if spec.is_nm else None


def _excluded_prefixes(model) -> list[str]:
    """Module names whose tensors stay dense whatever they hold: embeddings and the output head."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    for n, mod in model.named_modules():
        if isinstance(mod, torch.nn.Embedding) or (out_emb is not None and mod is out_emb):
            names.append(n + ".")
    return names


def _unique_state(model):
    """``(name, tensor)`` of the state dict, tied/shared tensors once (first name kept, like save_pretrained)."""
    seen = set()
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        yield k, v


_ST_NAME = {v: k for k, v in _ST_DTYPES.items() if v is not None}


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write a safetensors file (same layout as ``safetensors.torch.save_file``: tensors ordered by
    element size, largest first, so each starts aligned; header padded with spaces to 8 bytes),
    streaming each tensor's bytes to the file without an extra copy. Readable by ``safe_open``."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, off = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for k in order:
        t = tensors[k]
        n = t.numel() * t.element_size()
        header[k] = {"dtype": _ST_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((-len(hb)) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for k in order:
            t = tensors[k]
            if t.numel():
                f.write(memoryview(_bytes_view(t)))


class _ShardWriter:
    """Collects packed tensors into shards of at most ``max_bytes``; each full shard is checksummed
    and written by a background thread while the next one is packed (at most one shard waits)."""

    def __init__(self, out_dir: Path, max_bytes: int):
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.max = out_dir, max_bytes
        self.cur: dict = {}
        self.cur_bytes = 0
        self.files: list[tuple[str, list[str], int]] = []  # (tmp name, names, bytes)
        self.pool = ThreadPoolExecutor(1)
        self.pending = None

    def add(self, parts: dict):
        size = sum(t.numel() * t.element_size() for t in parts.values())
        if self.cur and self.cur_bytes + size > self.max:
            self.flush()
        self.cur.update({k: v.contiguous() for k, v in parts.items()})
        self.cur_bytes += size

    @staticmethod
    def _write(path: Path, tensors: dict):
        sums = {k: checksum(v) for k, v in tensors.items()}
        meta = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), CHECKSUM_KEY: json.dumps(sums)}
        write_safetensors(path, tensors, meta)

    def _wait(self):
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()  # re-raises a write error (disk full, ...)

    def flush(self):
        if not self.cur:
            return
        self._wait()
        fn = f".shard-{len(self.files):05d}.tmp"
        self.pending = self.pool.submit(self._write, self.out / fn, self.cur)
        self.files.append((fn, list(self.cur), self.cur_bytes))
        self.cur, self.cur_bytes = {}, 0

    def close(self):
        try:
            self._wait()
        finally:
            self.pool.shutdown(wait=True)

    def finish(self) -> list[str]:
        self.flush()
        self.close()
        n = len(self.files)
        names = []
        if n == 0:  # a model with no tensors still gets a (empty) file
            write_safetensors(self.out / SINGLE_FILE, {}, {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)})
            return [SINGLE_FILE]
        weight_map, total = {}, 0
        for i, (tmp, keys, nbytes) in enumerate(self.files):
            final = SINGLE_FILE if n == 1 else SHARD_NAME.format(i=i + 1, n=n)
            os.replace(self.out / tmp, self.out / final)
            names.append(final)
            total += nbytes
            for k in keys:
                weight_map[k] = final
        if n > 1:
            idx = {"metadata": {"total_size": total, "format": FORMAT_NAME, "version": FORMAT_VERSION},
                   "weight_map": dict(sorted(weight_map.items()))}
            (self.out / INDEX_FILE).write_text(json.dumps(idx, indent=2) + "\n")
        return names


def save_packed(model, tokenizer, out_dir, record: dict | None = None, *, prefer=None,
                max_shard_size=DEFAULT_MAX_SHARD_BYTES, progress=None) -> dict:
    """Write ``model`` as a packed checkpoint into the existing, empty directory ``out_dir``.

    ``prefer``: an N:M pattern ('2:4' or (2, 4)) to use wherever a weight satisfies it (default: the
    record's ``recipe.sparsity`` when that is N:M; otherwise the smallest pattern each weight
    satisfies). ``progress``: the engine's ``task(description, total) -> advance`` protocol.
    Returns the format summary (also written to ``llmsparse.json`` under ``"format"``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise UserError(f"{out} is not empty; save_packed writes into an empty directory")
    record = record if record is not None else {}
    if prefer is None:
        prefer = (record.get("recipe") or {}).get("sparsity")
    pref = parse_pattern(prefer)
    max_bytes = parse_size(max_shard_size)
    excluded = _excluded_prefixes(model)
    state = list(_unique_state(model))
    advance = progress.task("packing", len(state)) if progress is not None else None
    w = _ShardWriter(out, max_bytes)
    try:
        files, stats = _pack_all(w, state, excluded, pref, advance)
    finally:
        w.close()
    return _finish_packed(model, tokenizer, out, record, files, *stats)


def _pack_all(w, state, excluded, pref, advance):
    layers, counts = {}, {}
    lin_dense = lin_stored = tensors_bytes = dense_bytes = 0
    first_float = None
    for name, t in state:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        nbytes = t.numel() * t.element_size()
        dense_bytes += nbytes
        if first_float is None and t.is_floating_point():
            first_float = t.dtype
        candidate = (t.is_floating_point() and t.dim() >= 2 and t.dtype in _NAME_OF
                     and not any(name.startswith(p) for p in excluded))
        if not candidate:
            w.add({name: t})
            tensors_bytes += nbytes
        else:
            ch, parts = codecs.encode_auto(t, pref)
            entry = {"encoding": ch.encoding, "pattern": ch.pattern, "shape": list(t.shape),
                     "dtype": _NAME_OF[t.dtype], "nnz": ch.nnz}
            if ch.encoding == "nm":
                entry.update(n=ch.n, m=ch.m)
            if not ch.exact:
                entry["exact"] = False  # -0.0 at pruned positions were taken as zeros (read back as +0.0)
            stored = {name + suf: v for suf, v in parts.items()}
            sb = sum(v.numel() * v.element_size() for v in stored.values())
            entry["bytes"] = sb
            layers[name] = entry
            counts[ch.pattern] = counts.get(ch.pattern, 0) + 1
            lin_dense += nbytes
            lin_stored += sb
            tensors_bytes += sb
            w.add(stored)
            del parts, stored
        if advance:
            advance()
    files = w.finish()
    return files, (layers, counts, lin_dense, lin_stored, tensors_bytes, dense_bytes, first_float)


def _finish_packed(model, tokenizer, out, record, files, layers, counts, lin_dense, lin_stored, tensors_bytes,
                   dense_bytes, first_float):
    on_disk = sum((out / f).stat().st_size for f in files)
    sparsity = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "layers": layers}
    # config.json: what save_pretrained writes, plus the sparsity section
    cfg = model.config
    if getattr(cfg, "architectures", None) in (None, []):
        cfg.architectures = [type(model).__name__]
    if first_float is not None:
        cfg.dtype = first_float
    had = cfg.__dict__.pop("sparsity", None)
    cfg.save_pretrained(out)
    if had is not None:
        cfg.sparsity = had
    cj = json.loads((out / "config.json").read_text())
    cj["sparsity"] = sparsity
    (out / "config.json").write_text(json.dumps(cj, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None and hasattr(model, "can_generate") and model.can_generate():
        try:
            gen.save_pretrained(out)
        except Exception:  # an invalid generation config is not ours to fix
            pass
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    summary = {
        "name": FORMAT_NAME, "version": FORMAT_VERSION, "files": files,
        "layers_by_pattern": counts,
        "linear_dense_bytes": lin_dense, "linear_stored_bytes": lin_stored,
        "linear_ratio": (lin_stored / lin_dense) if lin_dense else None,
        "tensor_bytes": tensors_bytes, "dense_tensor_bytes": dense_bytes,
        "weights_file_bytes": on_disk, "ratio": tensors_bytes / dense_bytes if dense_bytes else None,
        "sparse_layers": sum(v for k, v in counts.items() if k != "dense"),
    }
    record["format"] = summary
    (out / "llmsparse.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return summary


# ------------------------------------------------------------------ loading ---------------------------

def _config_dtype(cfg):
    d = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    if isinstance(d, str):
        d = _DTYPE_OF.get(d)
    return d if isinstance(d, torch.dtype) else None


def load_packed(path, dtype=None, tokenizer=True, *, device=None, sparse_kernels: bool | None = None,
                verify: bool = True):
    """Load a packed checkpoint. Returns ``(model, tokenizer or None)``.

    The model equals ``AutoModelForCausalLM.from_pretrained`` of the dense export: dense-with-zeros
    weights (bitwise the ones that were saved), tied weights tied, ``dtype`` as from_pretrained
    would give it (``None``: the checkpoint's). With ``device`` a CUDA device and ``sparse_kernels``
    (default: on for CUDA), 2:4 fp16/bf16 linears become :class:`llmsparse.kernels.SparseLinear`
    built straight from the stored values and metadata, without a dense copy.
    Any problem raises a one-line UserError naming the tensor; nothing half-loaded is returned."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights

    path = Path(path)
    plan = _plan(path)  # every header check before any tensor is read
    dev = torch.device(device) if device is not None else None
    if sparse_kernels is None:
        sparse_kernels = dev is not None and dev.type == "cuda"
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}/config.json: {str(e).splitlines()[0][:200]}") from None
    cfg.__dict__.pop("sparsity", None)
    td = dtype if isinstance(dtype, torch.dtype) else _DTYPE_OF.get(dtype) if dtype else None
    td = td or _config_dtype(cfg)
    if td is None:
        for it in plan.items:
            sdt = _ST_DTYPES[plan.stored[next(iter(it.parts.values()))][1]]
            if sdt.is_floating_point:
                td = sdt
                break
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=td or torch.float32)
    model.tie_weights()
    model.eval()
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    expected = set(model.state_dict().keys())
    names = {it.name for it in plan.items}
    extra = sorted(names - expected)
    if extra:
        raise UserError(f"tensor {extra[0]} is in the checkpoint but not in a {type(model).__name__}; "
                        "the checkpoint does not match its config.json")
    to_swap = {}
    loaded = set()
    with _handles(plan) as hs:
        for it in plan.items:
            target = params.get(it.name, buffers.get(it.name))
            shape = tuple(it.entry["shape"]) if not it.dense else plan.stored[it.parts[""]][2]
            if tuple(target.shape) != tuple(shape):
                raise UserError(f"tensor {it.name}: shape {list(shape)} in the checkpoint, the model expects "
                                f"{list(target.shape)}; the checkpoint does not match its config.json")
            if (sparse_kernels and not it.dense and it.entry.get("pattern") == "2:4" and len(shape) == 2
                    and shape[1] % 8 == 0 and target.dtype in (torch.float16, torch.bfloat16)
                    and _DTYPE_OF[it.entry["dtype"]] == target.dtype and it.name.endswith(".weight")):
                mod_name = it.name[: -len(".weight")]
                mod = model.get_submodule(mod_name)
                if isinstance(mod, torch.nn.Linear):
                    parts = {}
                    for suf, sn in it.parts.items():
                        t = hs[plan.stored[sn][0]].get_tensor(sn, copy=True)
                        if verify and not _verify(t, plan.checksums.get(sn)):
                            raise UserError(f"tensor {sn}: checksum mismatch; the file is corrupted, re-export it")
                        parts[suf] = t
                    try:  # validate the metadata (the decoded weight is dropped at once)
                        codecs.decode(it.entry, parts)
                    except codecs.FormatError as e:
                        raise UserError(f"tensor {it.name}: {e}; the checkpoint is corrupted") from None
                    to_swap[mod_name] = (parts[".values"], parts[".meta"])
                    loaded.add(it.name)
                    continue
            t = _read_item(plan, hs, it, verify)
            if t.dtype != target.dtype:
                t = t.to(target.dtype)
            if it.name in params:
                params[it.name].data = t
            else:
                mod_name, _, attr = it.name.rpartition(".")
                model.get_submodule(mod_name)._buffers[attr] = t
            loaded.add(it.name)
    loaded_ids = {id(params[n]) for n in loaded if n in params}
    missing = [k for k in model.state_dict().keys()
               if k not in loaded and not (k in params and id(params[k]) in loaded_ids)]
    if missing:
        raise UserError(f"tensor {missing[0]} is missing from the checkpoint ({len(missing)} missing); "
                        "the checkpoint is incomplete, re-export it")
    if to_swap:
        from ..kernels import prepare, swap_packed

        swap_packed(model, to_swap)
    if dev is not None:
        model.to(dev)
        if to_swap and dev.type == "cuda":
            prepare(model)
    gen = path / "generation_config.json"
    if gen.is_file():
        try:
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(str(path))
        except Exception:
            pass
    tok = None
    if tokenizer:
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, TypeError):
            tok = None
    return model, tok


# ------------------------------------------------------------------ describing ------------------------

def describe(path) -> dict:
    """Format, per-layer patterns and bytes, from the headers only (no tensor data is read)."""
    plan = _plan(path)
    p = Path(path)
    layers, by_pattern = {}, {}
    lin_dense = lin_stored = stored_total = dense_total = 0
    for it in plan.items:
        sb = sum(plan.stored[sn][3] for sn in it.parts.values())
        if it.entry is not None:
            shape = it.entry["shape"]
            es = torch.empty(0, dtype=_DTYPE_OF[it.entry["dtype"]]).element_size()
            db = math.prod(shape) * es
            nnz = it.entry.get("nnz")
            layers[it.name] = {"pattern": it.entry["pattern"], "encoding": it.entry["encoding"], "shape": shape,
                               "dtype": it.entry["dtype"], "bytes": sb, "dense_bytes": db,
                               "sparsity": (1 - nnz / math.prod(shape)) if nnz is not None and math.prod(shape) else None}
            pat = it.entry["pattern"]
            b = by_pattern.setdefault(pat, {"layers": 0, "bytes": 0, "dense_bytes": 0})
            b["layers"] += 1
            b["bytes"] += sb
            b["dense_bytes"] += db
            lin_dense += db
            lin_stored += sb
        else:
            db = sb
        stored_total += sb
        dense_total += db
    files = {fn: (p / fn).stat().st_size for fn in plan.files}
    return {
        "format": FORMAT_NAME, "version": plan.sparsity.get("version"), "files": files,
        "file_bytes": sum(files.values()), "tensor_bytes": stored_total, "dense_bytes": dense_total,
        "ratio": stored_total / dense_total if dense_total else None,
        "linear_bytes": lin_stored, "linear_dense_bytes": lin_dense,
        "linear_ratio": lin_stored / lin_dense if lin_dense else None,
        "by_pattern": by_pattern, "layers": layers,
    }


def format_tables(desc: dict, matrices: bool = False) -> list:
    """Rich tables for ``llmsparse info`` of a packed checkpoint: per-pattern totals (and per matrix)."""
    from rich.table import Table

    out = []
    if matrices:
        t = Table(title="packed layers")
        for c in ("matrix", "pattern", "dtype", "stored MB", "dense MB", "ratio"):
            t.add_column(c, justify="left" if c in ("matrix", "pattern", "dtype") else "right")
        for k, r in desc["layers"].items():
            t.add_row(k, r["pattern"], r["dtype"], f"{r['bytes'] / 1e6:.3f}", f"{r['dense_bytes'] / 1e6:.3f}",
                      f"{r['bytes'] / max(r['dense_bytes'], 1):.4f}")
        out.append(t)
    t = Table(title=f"format {desc['format']} v{desc['version']}: per pattern")
    for c in ("pattern", "layers", "stored MB", "dense MB", "ratio"):
        t.add_column(c, justify="left" if c == "pattern" else "right")
    for pat, r in sorted(desc["by_pattern"].items()):
        t.add_row(pat, str(r["layers"]), f"{r['bytes'] / 1e6:,.2f}", f"{r['dense_bytes'] / 1e6:,.2f}",
                  f"{r['bytes'] / max(r['dense_bytes'], 1):.4f}")
    if desc["linear_dense_bytes"]:
        t.add_row("all decoder weights", str(len(desc["layers"])), f"{desc['linear_bytes'] / 1e6:,.2f}",
                  f"{desc['linear_dense_bytes'] / 1e6:,.2f}", f"{desc['linear_ratio']:.4f}")
    t.add_row("all tensors", "", f"{desc['tensor_bytes'] / 1e6:,.2f}", f"{desc['dense_bytes'] / 1e6:,.2f}",
              f"{desc['ratio']:.4f}")
    out.append(t)
    s = Table(title="on disk", show_header=False)
    for fn, b in desc["files"].items():
        s.add_row(fn, f"{b:,} bytes")
    s.add_row("weight files total", f"{desc['file_bytes']:,} bytes ({desc['file_bytes'] / 1e6:,.2f} MB)")
    out.append(s)
    return out
