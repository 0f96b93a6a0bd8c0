#!/usr/bin/env python3
"""Comparison benchmark: pvsnap vs restic, borg, rustic and rsync-based snapshots.

Python 3.11 standard library only.  See README.md next to this file.

For every dataset (pg, src, img, media) two states A and B are generated
deterministically (seeded) and cached under WORKDIR/states.  For every
repetition and every tool, a fresh repository is created and the step
sequence is run against ONE live directory (WORKDIR/live/<dataset>):

    initial      snapshot of state A
    incremental  live dir synced to state B (rsync -a --delete), snapshot
    unchanged    snapshot of state B again
    restore      restore the latest snapshot into an empty directory, then
                 verify it against state B (file list, sizes, content hashes)

Each step is run under /usr/bin/time; wall time, user+sys CPU, peak RSS and
the repository size after the step are recorded.  Floors (tar|zstd, stat-only
walks, cp -a) are measured in every repetition too.  Runs are warm-cache: the
page cache is not dropped, `sync` is called between steps.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import datetime as dt
import glob
import hashlib
import hmac
import itertools
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GEN_VERSION = 1
ALL_DATASETS = ["pg", "src", "img", "media"]
ALL_TOOLS = ["rsync-full", "rsync-linkdest", "restic", "borg", "rustic", "pvsnap"]
STEPS = ["initial", "incremental", "unchanged", "restore"]
FLOOR_FOR_STEP = {"initial": "tar|zstd", "unchanged": "stat-walk", "restore": "cp -a"}
RESTIC_PASSWORD = "pvsnap-bench"
PG_PORT = 54329
MiB = 1 << 20
KiB = 1 << 10

# --------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def die(msg: str, code: int = 2) -> None:
    print(f"ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(cmd, check=True, capture=False, env=None, cwd=None, timeout=None):
    """Run an untimed helper command."""
    res = subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode != 0:
        detail = ""
        if capture:
            detail = "\n" + (res.stdout or "")[-2000:] + (res.stderr or "")[-2000:]
        raise RuntimeError(f"command failed (rc={res.returncode}): {shlex.join(map(str, cmd))}{detail}")
    return res


def rmtree(p: Path) -> None:
    """Remove a tree; unlinks run on a thread pool (unlink latency dominates here)."""
    if p.is_symlink() or p.is_file():
        p.unlink()
        return
    if not p.exists():
        return
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirs.append(dirpath)
        files.extend(os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        files.extend(os.path.join(dirpath, f) for f in filenames)
    try:
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(os.unlink, files, chunksize=256))
        for d in reversed(dirs):
            os.rmdir(d)
    except OSError:
        shutil.rmtree(p)


def du_bytes(p: Path) -> int:
    """Apparent size in bytes; hardlinked files are counted once (du semantics)."""
    if not p.exists():
        return 0
    res = run(["du", "-sb", p], capture=True)
    return int(res.stdout.split()[0])


def tree_stats(root: Path) -> dict:
    files = dirs = links = 0
    size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.islink(os.path.join(dirpath, name)):
                links += 1
            else:
                files += 1
                size += st.st_size
    return {"files": files, "dirs": dirs, "symlinks": links, "bytes": size}


def first_line(cmd) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        out = (res.stdout or res.stderr).strip().splitlines()
        return out[0].strip() if out else "?"
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({e.__class__.__name__})"


def with_env(**changes: str | None) -> dict:
    """This process's environment with `changes`; a value of None removes the variable."""
    env = dict(os.environ, **changes)
    return {k: v for k, v in env.items() if v is not None}


def sync() -> None:
    os.sync()


def timed_sync() -> float:
    """`sync`, returning its wall seconds. Right after a restore into a fresh
    file system this is the time the restored data takes to reach the disk."""
    t0 = time.monotonic()
    os.sync()
    return time.monotonic() - t0


# --------------------------------------------------------------------------
# installation of missing dependencies

APT_LOCK_WAIT_S = 900


def apt_get(args: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}", "-y", "-q", *args]
    deadline = time.monotonic() + APT_LOCK_WAIT_S
    while True:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode == 0:
            return
        err = res.stderr + res.stdout
        if re.search(r"lock|Could not get lock|is held by process", err, re.I) and time.monotonic() < deadline:
            log("apt/dpkg lock held by another process; waiting ...")
            time.sleep(10)
            continue
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{err[-3000:]}")


def pg_bindir() -> Path | None:
    cands = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")],
    )
    return Path(cands[-1]).parent if cands else None


def ensure_packages(datasets: list[str], tools: list[str]) -> None:
    need: list[tuple[str, bool]] = [
        ("rsync", shutil.which("rsync") is not None),
        ("time", os.access("/usr/bin/time", os.X_OK)),
        ("zstd", shutil.which("zstd") is not None),
        ("tar", shutil.which("tar") is not None),
    ]
    if "pg" in datasets:
        need.append(("postgresql", pg_bindir() is not None))
    if "restic" in tools:
        need.append(("restic", shutil.which("restic") is not None))
    if "borg" in tools:
        need.append(("borgbackup", shutil.which("borg") is not None))
    missing = [pkg for pkg, ok in need if not ok]
    if not missing:
        return
    if os.geteuid() != 0:
        die(f"missing packages {missing}; run as root (apt-get install) or install them: apt-get install {' '.join(missing)}")
    log(f"installing missing packages with apt-get: {' '.join(missing)}")
    try:
        apt_get(["update"])
        apt_get(["install", "--no-install-recommends", *missing])
    except RuntimeError as e:
        die(f"could not install {missing}: {e}")
    if "postgresql" in missing and pg_bindir() is None:
        die("postgresql installed but no /usr/lib/postgresql/<ver>/bin/initdb found")


def find_exe(name: str) -> str | None:
    p = shutil.which(name)
    if p:
        return p
    cand = Path.home() / ".cargo" / "bin" / name
    return str(cand) if os.access(cand, os.X_OK) else None


def ensure_rustic(timeout_s: int) -> str | None:
    exe = find_exe("rustic")
    if exe:
        return exe
    if not shutil.which("cargo") and not find_exe("cargo"):
        log("rustic requested but not installed and cargo is missing: skipping rustic")
        return None
    cargo = shutil.which("cargo") or find_exe("cargo")
    log(f"rustic not found: running `cargo install --locked rustic-rs` (time box {timeout_s}s) ...")
    try:
        res = subprocess.run([cargo, "install", "--locked", "rustic-rs"], capture_output=True, text=True,
                             timeout=timeout_s, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            log("cargo install rustic-rs failed; skipping rustic:\n" + res.stderr[-1500:])
            return None
    except subprocess.TimeoutExpired:
        log(f"cargo install rustic-rs did not finish within {timeout_s}s; skipping rustic")
        return None
    return find_exe("rustic")


# --------------------------------------------------------------------------
# deterministic content generation

KEYWORDS = ("fn let mut return if else for while match struct impl pub use mod const static "
            "def class import from self None True False async await yield try except raise "
            "int char void unsigned sizeof typedef include define var function new this").split()
SYLLABLES = ("ka lo ri ne ta mi so vu be de fa gi ho ju ex in ar or ul st tr pr ch sh "
             "al el il ol um an en on er ir ack ent ion ing ize buf ptr idx len cfg").split()


class TextGen:
    """Produces realistic-looking code/prose/data lines from a seeded RNG."""

    def __init__(self, seed: int):
        rng = random.Random(seed)
        words: set[str] = set()
        while len(words) < 4000:
            words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words)
        rng.shuffle(self.words)
        w = self.words
        # Zipf-ish: the first words are used much more often
        cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.9 for i in range(len(w))))
        pick = lambda k: rng.choices(w, cum_weights=cum, k=k)  # noqa: E731

        def ident() -> str:
            return "_".join(pick(rng.randint(1, 3)))

        code, prose, data = [], [], []
        for _ in range(12000):
            t = rng.randrange(12)
            ind = "    " * rng.randint(0, 3)
            n = rng.randint(0, 4096)
            if t == 0:
                code.append(f"{ind}let {ident()} = {ident()}::{ident()}(&{ident()}, {n});")
            elif t == 1:
                code.append(f"{ind}def {ident()}(self, {ident()}, {ident()}={n}):")
            elif t == 2:
                code.append(f"{ind}// {' '.join(pick(rng.randint(3, 12)))}")
            elif t == 3:
                code.append(f"{ind}if {ident()} > {n} {{ return {ident()}; }}")
            elif t == 4:
                code.append(f"{ind}{rng.choice(KEYWORDS)} {ident()}({', '.join(pick(rng.randint(0, 4)))})")
            elif t == 5:
                code.append(f"{ind}# {' '.join(pick(rng.randint(3, 10)))}")
            elif t == 6:
                code.append(f"{ind}{ident()}.{ident()}[{n}] = {ident()} + {rng.randint(0, 99)};")
            elif t == 7:
                code.append("")
            elif t == 8:
                code.append(f"{ind}}}")
            elif t == 9:
                code.append(f"{ind}for {ident()} in {ident()}.iter() {{")
            elif t == 10:
                code.append(f'{ind}log::info!("{" ".join(pick(rng.randint(2, 7)))} {{}}", {ident()});')
            else:
                code.append(f"{ind}return Err(Error::{ident().title()}({n}));")
        for _ in range(6000):
            s = " ".join(pick(rng.randint(4, 18)))
            prose.append(s[:1].upper() + s[1:] + rng.choice([".", ".", ".", ",", ":", "?"]))
            if rng.random() < 0.1:
                prose.append("")
            if rng.random() < 0.05:
                prose.append("#" * rng.randint(1, 3) + " " + " ".join(pick(rng.randint(1, 5))).title())
        for _ in range(6000):
            t = rng.randrange(4)
            if t == 0:
                data.append(f'  "{ident()}": {rng.randint(0, 10**6)},')
            elif t == 1:
                data.append(f'{ident()} = "{"-".join(pick(rng.randint(1, 3)))}"')
            elif t == 2:
                data.append(",".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(3, 9))))
            else:
                data.append(f'  - name: {ident()}\n    value: {rng.random():.6f}')
        self.pools = {"code": code, "prose": prose, "data": data}

    def text(self, rng: random.Random, style: str, size: int, header: str = "") -> bytes:
        pool = self.pools[style]
        k = size // 30 + 2
        body = header + "\n".join(rng.choices(pool, k=k))
        while len(body) < size:
            body += "\n" + "\n".join(rng.choices(pool, k=k))
        return (body[: max(size - 1, 0)] + "\n").encode()


EXT = {
    "code": [".rs", ".py", ".c", ".h", ".go", ".js", ".ts", ".java"],
    "prose": [".md", ".txt", ".rst"],
    "data": [".json", ".toml", ".yaml", ".csv"],
}
BASE_MTIME = 1_600_000_000
BASE_MTIME_B = 1_700_000_000


def set_mtime(path: Path, t: float) -> None:
    os.utime(path, (t, t), follow_symlinks=False)


def gen_src(states: Path, seed: int, n_files: int) -> None:
    rng = random.Random(seed * 1000 + 1)
    tg = TextGen(seed)
    a = states / "A"
    a.mkdir(parents=True)
    # directory tree
    tops = ["crates", "docs", "vendor", "tests", "tools", "web", "lib", "scripts", "assets", "examples"]
    dirs: list[tuple[str, int]] = [(t, 1) for t in tops]
    n_dirs = max(len(tops), n_files // 25)
    used = set(d for d, _ in dirs)
    while len(dirs) < n_dirs:
        parent, depth = rng.choice(dirs)
        if depth >= 6:
            continue
        name = "_".join(rng.choices(tg.words[:800], k=rng.randint(1, 2)))
        p = f"{parent}/{name}"
        if p in used:
            continue
        used.add(p)
        dirs.append((p, depth + 1))
    for d, _ in dirs:
        (a / d).mkdir(parents=True, exist_ok=True)
    # files
    lo, hi = math.log(200), math.log(20 * KiB)
    reservoir: list[bytes] = []
    paths: set[str] = set()
    for i in range(n_files):
        d = rng.choice(dirs)[0]
        style = rng.choices(["code", "prose", "data"], weights=[65, 20, 15])[0]
        if rng.random() < 0.05 and reservoir:
            content = rng.choice(reservoir)  # duplicate of an earlier file
            name = rng.choice(["LICENSE", "README.md", "mod.rs", "__init__.py", "util.c", "config.toml"])
        else:
            size = int(math.exp(rng.uniform(lo, hi)))
            name = "_".join(rng.choices(tg.words[:2000], k=rng.randint(1, 3))) + rng.choice(EXT[style])
            content = tg.text(rng, style, size, header=f"// {d}/{name}\n")
        rel = f"{d}/{name}"
        j = 1
        while rel in paths:
            rel = f"{d}/{j}_{name}"
            j += 1
        paths.add(rel)
        p = a / rel
        p.write_bytes(content)
        set_mtime(p, BASE_MTIME + rng.randint(0, 30_000_000))
        if len(reservoir) < 1000:
            reservoir.append(content)
        elif rng.random() < 0.02:
            reservoir[rng.randrange(1000)] = content
    for d, _ in sorted(dirs, key=lambda x: -x[1]):
        set_mtime(a / d, BASE_MTIME)

    # state B: modify 2 %, delete 1 %, add 300
    b = states / "B"
    run(["cp", "-a", a, b])
    files = sorted(paths)
    rngb = random.Random(seed * 1000 + 2)
    n_mod = max(1, round(len(files) * 0.02))
    n_del = max(1, round(len(files) * 0.01))
    chosen = rngb.sample(files, n_mod + n_del)
    for i, rel in enumerate(chosen[:n_mod]):
        p = b / rel
        data = p.read_bytes()
        op = i % 3
        if op == 0:  # append lines
            data = data + tg.text(rngb, "code", rngb.randint(50, 2000))
        elif op == 1:  # replace a span with other text
            s = rngb.randrange(len(data))
            e = min(len(data), s + rngb.randint(10, 1500))
            data = data[:s] + tg.text(rngb, "code", rngb.randint(10, 1500)) + data[e:]
        else:  # same-size in-place edit (only mtime/ctime reveal it)
            s = rngb.randrange(len(data))
            e = min(len(data), s + rngb.randint(8, 400))
            repl = bytes(rngb.choice(b"abcdefghijklmnopqrstuvwxyz_ ") for _ in range(e - s))
            data = data[:s] + repl + data[e:]
        p.write_bytes(data)
        set_mtime(p, BASE_MTIME_B + i)
    for rel in chosen[n_mod:]:
        (b / rel).unlink()
    new_dirs = [f"crates/new_feature_{k}" for k in range(10)]
    for nd in new_dirs:
        (b / nd).mkdir(parents=True, exist_ok=True)
    for i in range(300):
        d = new_dirs[i % 10] if i % 3 == 0 else rngb.choice(dirs)[0]
        style = rngb.choices(["code", "prose", "data"], weights=[65, 20, 15])[0]
        name = f"added_{i}_" + rngb.choice(tg.words[:500]) + rngb.choice(EXT[style])
        p = b / d / name
        p.write_bytes(tg.text(rngb, style, int(math.exp(rngb.uniform(lo, hi))), header=f"// {d}/{name}\n"))
        set_mtime(p, BASE_MTIME_B + 100_000 + i)


def img_blocks(tg: TextGen, seed: int, n: int = 1024) -> list[bytes]:
    rng = random.Random(seed * 1000 + 3)
    return [tg.text(rng, rng.choice(["code", "prose", "data"]), 4096) for _ in range(n)]


def struct_region(rng: random.Random, region_idx: int, size: int) -> bytes:
    """Binary records: counters, timestamps, small ids, padding (compressible)."""
    out = bytearray()
    base = region_idx * (size // 64)
    ts = BASE_MTIME + region_idx * 977
    ids = [bytes(rng.choice(b"ABCDEFGH0123") for _ in range(16)) for _ in range(64)]
    for r in range(size // 64):
        out += struct.pack("<QQ16sI", base + r, ts + r * 3, ids[r & 63], r % 251) + b"\0" * 28
    return bytes(out)


def gen_img(states: Path, seed: int, size: int, n_writes: int) -> None:
    rng = random.Random(seed * 1000 + 4)
    tg = TextGen(seed)
    blocks = img_blocks(tg, seed)
    a = states / "A"
    a.mkdir(parents=True)
    img = a / "disk.img"
    region = MiB
    with open(img, "wb") as f:
        for r in range(size // region):
            kind = rng.choices(["text", "struct", "zero", "random"], weights=[25, 25, 20, 30])[0]
            if kind == "text":
                f.write(b"".join(rng.choices(blocks, k=region // 4096)))
            elif kind == "struct":
                f.write(struct_region(rng, r, region))
            elif kind == "zero":
                f.write(bytes(region))
            else:
                f.write(rng.randbytes(region))
    set_mtime(img, BASE_MTIME)
    set_mtime(a, BASE_MTIME)
    b = states / "B"
    run(["cp", "-a", a, b])
    rngb = random.Random(seed * 1000 + 5)
    with open(b / "disk.img", "r+b") as f:
        for i in range(n_writes):
            off = rngb.randrange(size // 4096) * 4096
            f.seek(off)
            if i % 2:
                f.write(rngb.randbytes(4096))
            else:
                blk = bytearray(rngb.choice(blocks))
                blk[:16] = struct.pack("<QQ", i, off)
                f.write(bytes(blk))
    set_mtime(b / "disk.img", BASE_MTIME_B)


def gen_media(states: Path, seed: int, n: int, size: int) -> None:
    rng = random.Random(seed * 1000 + 6)
    a = states / "A"
    albums = ["2019_trip", "2021_family", "raw_footage", "exports"]
    for al in albums:
        (a / al).mkdir(parents=True)
    names = []
    for i in range(n):
        rel = f"{albums[i % len(albums)]}/clip_{i:03d}.mp4"
        with open(a / rel, "wb") as f:
            left = size
            while left:
                k = min(left, 4 * MiB)
                f.write(rng.randbytes(k))
                left -= k
        set_mtime(a / rel, BASE_MTIME + i * 3600)
        names.append(rel)
    for al in albums:
        set_mtime(a / al, BASE_MTIME)
    b = states / "B"
    run(["cp", "-a", a, b])
    rngb = random.Random(seed * 1000 + 7)
    (b / names[0]).unlink()  # deleted
    set_mtime(b / names[1], BASE_MTIME_B)  # touched, content unchanged
    shutil.copyfile(b / names[2], b / "exports" / "clip_002_copy.mp4")  # copied under new name
    set_mtime(b / "exports" / "clip_002_copy.mp4", BASE_MTIME_B + 1)
    with open(b / "exports" / "new_clip.mp4", "wb") as f:  # new file
        left = size
        while left:
            k = min(left, 4 * MiB)
            f.write(rngb.randbytes(k))
            left -= k
    set_mtime(b / "exports" / "new_clip.mp4", BASE_MTIME_B + 2)


def gen_pg(states: Path, seed: int, scale: int, seconds: int, gen_root: Path) -> None:
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/<ver>/bin")
    root = gen_root / "pg"
    rmtree(root)
    root.mkdir(parents=True)
    data = root / "data"
    sock = root / "sock"
    sock.mkdir()
    as_pg: list[str] = []
    if os.geteuid() == 0:
        run(["chown", "-R", "postgres:postgres", root])
        as_pg = ["runuser", "-u", "postgres", "--"]
    logf = root / "server.log"

    def pg(*args, **kw):
        return run([*as_pg, *map(str, args)], cwd=root, capture=True, **kw)

    conn = ["-h", str(sock), "-p", str(PG_PORT), "-U", "postgres"]
    opts = f"-k {sock} -p {PG_PORT} -c listen_addresses=''"

    def start():
        pg(bindir / "pg_ctl", "-D", data, "-l", logf, "-o", opts, "-w", "-t", "120", "start")

    def stop():
        pg(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "300", "stop")

    pg(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions")
    started = False
    try:
        start()
        started = True
        log(f"  pgbench -i -s {scale}")
        pg(bindir / "pgbench", *conn, "-i", "-q", "-s", scale, "postgres")
        stop()
        started = False
        run(["cp", "-a", data, states / "A"])
        start()
        started = True
        log(f"  pgbench -T {seconds}")
        pg(bindir / "pgbench", *conn, "-c", "2", "-j", "2", "-T", seconds, f"--random-seed={seed}", "postgres")
        pg(bindir / "psql", *conn, "-d", "postgres", "-q", "-c", "CHECKPOINT")
        stop()
        started = False
        run(["cp", "-a", data, states / "B"])
    finally:
        if started:
            try:
                stop()
            except Exception as e:  # noqa: BLE001
                log(f"  warning: could not stop postgres: {e}")
    rmtree(root)


def dataset_params(name: str, smoke: bool) -> dict:
    if name == "pg":
        return {"scale": 1, "seconds": 3} if smoke else {"scale": 40, "seconds": 45}
    if name == "src":
        return {"n_files": 2000} if smoke else {"n_files": 50000}
    if name == "img":
        return {"size": 64 * MiB, "n_writes": 50} if smoke else {"size": 2048 * MiB, "n_writes": 1000}
    if name == "media":
        return {"n": 4, "size": 4 * MiB} if smoke else {"n": 20, "size": 50 * MiB}
    raise ValueError(name)


def prepare_dataset(name: str, workdir: Path, smoke: bool, seed: int, regen: bool) -> dict:
    params = dataset_params(name, smoke)
    ident = {"dataset": name, "gen_version": GEN_VERSION, "seed": seed, "params": params}
    states = workdir / "states" / f"{name}-{'smoke' if smoke else 'full'}"
    meta_path = states / "meta.json"
    if not regen and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("ident") == ident and (states / "A").is_dir() and (states / "B").is_dir():
                log(f"dataset {name}: reusing cached states in {states}")
                return meta
        except (ValueError, OSError):
            pass
    log(f"dataset {name}: generating {params} (seed {seed}) ...")
    rmtree(states)
    tmp = states.with_name(states.name + ".tmp")
    rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    if name == "pg":
        gen_pg(tmp, seed, params["scale"], params["seconds"], workdir / "gen")
    elif name == "src":
        gen_src(tmp, seed, params["n_files"])
    elif name == "img":
        gen_img(tmp, seed, params["size"], params["n_writes"])
    elif name == "media":
        gen_media(tmp, seed, params["n"], params["size"])
    sync()
    meta = {
        "ident": ident,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "gen_seconds": round(time.monotonic() - t0, 1),
        "A": tree_stats(tmp / "A"),
        "B": tree_stats(tmp / "B"),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    tmp.rename(states)
    log(f"dataset {name}: done in {meta['gen_seconds']}s: A={meta['A']} B={meta['B']}")
    return meta


# --------------------------------------------------------------------------
# restore verification


def scan(root: Path) -> dict[str, tuple[str, int | str]]:
    out: dict[str, tuple[str, int | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("l", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("d", 0)
            else:
                out[rel] = ("f", st.st_size)
    return out


def content_hash(path: str, size: int, rng: random.Random, whole: bool) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        if whole or size <= 64 * MiB:
            while chunk := f.read(4 * MiB):
                h.update(chunk)
        else:
            offsets = [0, size - MiB] + [rng.randrange(size - 64 * KiB) for _ in range(128)]
            for off in offsets:
                f.seek(off)
                h.update(f.read(MiB if off in (0, size - MiB) else 64 * KiB))
    return h.hexdigest()


def verify_restore(restored: Path, expected: Path, seed: int, sample: int = 256,
                   full_hash_budget: int = 1 << 30) -> dict:
    """Compare file list, types and sizes; hash contents.

    If the expected tree holds at most `full_hash_budget` bytes every file is hashed
    completely; otherwise a seeded sample of `sample` files plus the 4 largest is
    hashed (files over 64 MiB: first and last MiB plus 128 seeded 64 KiB windows).
    """
    exp = scan(expected)
    got = scan(restored)
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    mismatch = sorted(k for k in set(exp) & set(got) if exp[k] != got[k])
    files = sorted(k for k, v in exp.items() if v[0] == "f" and k in got and got[k] == v)
    rng = random.Random(seed)
    total = sum(exp[k][1] for k in files)
    if total <= full_hash_budget:
        picked = set(files)
    else:
        picked = set(rng.sample(files, min(sample, len(files))))
        picked |= set(sorted(files, key=lambda k: -exp[k][1])[:4])  # always the largest files
    hash_bad = []
    for rel in sorted(picked):
        size = exp[rel][1]
        s = rng.randrange(1 << 30)
        whole = total <= full_hash_budget
        if content_hash(str(expected / rel), size, random.Random(s), whole) != content_hash(
            str(restored / rel), size, random.Random(s), whole
        ):
            hash_bad.append(rel)
    ok = not (missing or extra or mismatch or hash_bad)
    return {
        "ok": ok,
        "entries": len(exp),
        "missing": len(missing),
        "extra": len(extra),
        "type_or_size_mismatch": len(mismatch),
        "hash_mismatch": len(hash_bad),
        "hashed_files": len(picked),
        "hash_mode": "all files, whole content" if total <= full_hash_budget else "seeded sample",
        "examples": (missing[:5] + extra[:5] + mismatch[:5] + hash_bad[:5]),
    }


def locate_restored(target: Path, live: Path) -> Path:
    full = target / str(live).lstrip("/")
    if full.is_dir():
        return full
    entries = list(target.iterdir()) if target.is_dir() else []
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name == live.name:
        return entries[0]
    return target


# --------------------------------------------------------------------------
# timed execution


REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")


def reported_kib() -> int | None:
    """Memory the guest has handed back to its host so far (free page
    reporting), or None where the kernel does not report free pages."""
    try:
        return int(REPORTED_KIB.read_text())
    except (OSError, ValueError):
        return None


def check_resolution(timed: "Timed") -> None:
    """Stops the run if wall times come out rounded: `sleep 0.07`, the best of
    three, must measure under 95 ms. A clock that polls for the end of a
    command every 50 ms reads it as 114 ms."""
    best = min(timed(["sleep", "0.07"])["wall_s"] for _ in range(3))
    if not 0.07 <= best < 0.095:
        die(f"the harness measured `sleep 0.07` as {best:.4f} s at best; wall times would be wrong")
    log(f"timing check: sleep 0.07 measured {best:.4f} s")


class Timed:
    def __init__(self, tmpdir: Path, timeout: float):
        self.tmpdir = tmpdir
        self.timeout = timeout

    def __call__(self, cmd, env=None, cwd=None, shell=False) -> dict:
        tf = self.tmpdir / "time.out"
        so = self.tmpdir / "stdout.txt"
        se = self.tmpdir / "stderr.txt"
        argv = ["bash", "-c", "set -o pipefail; " + cmd] if shell else [str(c) for c in cmd]
        full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(tf), *argv]
        penv = with_env(LC_ALL="C", **(env or {}))
        rk0 = reported_kib()
        with open(so, "wb") as fo, open(se, "wb") as fe:
            t0 = time.perf_counter()
            p = subprocess.Popen(full, env=penv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                 start_new_session=True)
            expired = threading.Event()

            def kill():
                expired.set()
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(self.timeout, kill)
            timer.start()
            try:
                # A blocking wait returns when the command ends. `wait(timeout=)`
                # polls with sleeps of up to 50 ms and so rounded every wall
                # time up to its next poll (runs 1-9 of BENCHMARKS.md).
                p.wait()
            finally:
                timer.cancel()
            wall = time.perf_counter() - t0
            timed_out = expired.is_set()
        rk1 = reported_kib()
        user = sys_ = 0.0
        rss = 0
        try:
            last = tf.read_text().strip().splitlines()[-1].split()
            user, sys_, rss = float(last[1]), float(last[2]), int(last[3])
        except (OSError, IndexError, ValueError):
            pass
        rc = p.returncode if not timed_out else -9
        stdout = so.read_bytes().decode(errors="replace")
        stderr = se.read_bytes().decode(errors="replace")
        return {
            "cmd": argv if not shell else cmd,
            "rc": rc,
            "timed_out": timed_out,
            "wall_s": round(wall, 4),
            "user_s": user,
            "sys_s": sys_,
            "cpu_s": round(user + sys_, 3),
            "maxrss_kib": rss,
            # MiB the guest handed back to the host while the command ran;
            # pages handed back must be supplied again before they are used
            "host_reported_mib": None if rk0 is None or rk1 is None else round((rk1 - rk0) / 1024, 1),
            "stdout": stdout,
            "stderr_tail": stderr[-3000:],
        }


# --------------------------------------------------------------------------
# tools


class Tool:
    name = "?"
    note = ""

    def __init__(self, exe: str, rundir: Path, bucket: "S3Bucket | None" = None):
        self.exe = exe
        self.rundir = rundir
        self.repo = rundir / "repo"
        self.aux = rundir / "aux"
        # --storage s3: the repository is this bucket on the run's S3 server
        self.bucket = bucket

    def repo_arg(self) -> str:
        """The repository as the tool's command line names it."""
        return f"s3:{self.bucket.url}" if self.bucket else str(self.repo)

    def repo_bytes(self) -> int:
        if not self.bucket:
            return du_bytes(self.repo)
        try:
            return self.bucket.size()
        except RuntimeError as e:
            die(f"the size of bucket {self.bucket.name} could not be read: {e}; the S3 server's log is "
                f"{self.bucket.server.log_path}")

    def warm_repo(self) -> None:
        if self.bucket:
            self.bucket.warm()
        else:
            warm(self.repo)

    def env(self) -> dict:
        return self.bucket.server.env() if self.bucket else {}

    def init_cmd(self):
        return None

    def snapshot_cmd(self, src: Path, n: int):
        raise NotImplementedError

    def restore_cmd(self, target: Path, n: int):
        raise NotImplementedError

    def restore_cwd(self, target: Path):
        return None

    def parse_snapshot(self, stdout: str) -> dict:
        return {}

    def version(self) -> str:
        return first_line([self.exe, "--version"])


class RsyncFull(Tool):
    name = "rsync-full"
    note = "rsync -a into a new folder per snapshot"

    def init_cmd(self):
        self.repo.mkdir(parents=True, exist_ok=True)
        return None

    def snapshot_cmd(self, src, n):
        return [self.exe, "-a", f"{src}/", f"{self.repo}/snap-{n}/"]

    def restore_cmd(self, target, n):
        return [self.exe, "-a", f"{self.repo}/snap-{n}/", f"{target}/"]


class RsyncLinkDest(RsyncFull):
    name = "rsync-linkdest"
    note = ("rsync -a --modify-window=-1 --link-dest=<previous snapshot folder> (without --modify-window=-1, "
            "rsync's quick check compares whole seconds and links a changed file of the same size and second "
            "to its old content: PostgreSQL's pg_internal.init does that here)")

    def snapshot_cmd(self, src, n):
        if n == 1:
            return super().snapshot_cmd(src, n)
        return [self.exe, "-a", "--modify-window=-1", f"--link-dest={self.repo}/snap-{n - 1}", f"{src}/",
                f"{self.repo}/snap-{n}/"]


class Restic(Tool):
    name = "restic"

    def env(self):
        return {**super().env(), "RESTIC_REPOSITORY": self.repo_arg(), "RESTIC_PASSWORD": RESTIC_PASSWORD,
                "RESTIC_CACHE_DIR": str(self.aux / "cache")}

    def init_cmd(self):
        return [self.exe, "init"]

    def snapshot_cmd(self, src, n):
        return [self.exe, "backup", "--json", "--host", "bench", str(src)]

    def restore_cmd(self, target, n):
        return [self.exe, "restore", "latest", "--target", str(target)]

    def parse_snapshot(self, stdout):
        for line in reversed(stdout.strip().splitlines()):
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("message_type") == "summary":
                keep = ("files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed",
                        "snapshot_id")
                return {k: msg.get(k) for k in keep}
        return {}

    def version(self):
        return first_line([self.exe, "version"])


class Borg(Tool):
    name = "borg"
    note = "borg init -e none; borg create with default compression (lz4)"

    def env(self):
        return {"BORG_REPO": str(self.repo), "BORG_BASE_DIR": str(self.aux), "BORG_PASSPHRASE": "",
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def init_cmd(self):
        return [self.exe, "init", "-e", "none"]

    def snapshot_cmd(self, src, n):
        return [self.exe, "create", f"::snap-{n}", str(src)]

    def restore_cmd(self, target, n):
        return [self.exe, "extract", f"::snap-{n}"]

    def restore_cwd(self, target):
        return target


class Rustic(Tool):
    name = "rustic"

    def base(self):
        if self.bucket:
            # S3 through opendal: the options live in a config profile (see env())
            where = ["-P", "bench"]
        else:
            where = ["-r", str(self.repo), "--password", RESTIC_PASSWORD]
        return [self.exe, *where, "--cache-dir", str(self.aux / "cache"), "--no-progress"]

    def env(self):
        if not self.bucket:
            return {}
        srv = self.bucket.server
        # rustic looks for profiles in its config dir (XDG_CONFIG_HOME/rustic)
        # and in the current folder (every command runs in the run folder)
        profile = self.aux / "config" / "rustic" / "bench.toml"
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(
            "[repository]\n"
            'repository = "opendal:s3"\n'
            f'password = "{RESTIC_PASSWORD}"\n'
            "[repository.options]\n"
            f'endpoint = "{srv.endpoint}"\n'
            f'bucket = "{self.bucket.name}"\n'
            'root = "/"\n'
            f'region = "{S3_REGION}"\n'
            f'access_key_id = "{S3_KEY_ID}"\n'
            f'secret_access_key = "{S3_SECRET}"\n')
        shutil.copyfile(profile, self.rundir / "bench.toml")
        return {**super().env(), "XDG_CONFIG_HOME": str(self.aux / "config")}

    def init_cmd(self):
        return [*self.base(), "init"]

    def snapshot_cmd(self, src, n):
        return [*self.base(), "backup", "--host", "bench", str(src)]

    def restore_cmd(self, target, n):
        return [*self.base(), "restore", "latest", str(target)]


class Pvsnap(Tool):
    name = "pvsnap"

    def env(self):
        # a cache pvsnap may keep for a remote repository starts empty and goes with the run
        return {**super().env(), "XDG_CACHE_HOME": str(self.aux / "cache")} if self.bucket else {}

    def init_cmd(self):
        return [self.exe, "--repo", self.repo_arg(), "init"]

    def snapshot_cmd(self, src, n):
        return [self.exe, "--repo", self.repo_arg(), "snapshot", str(src), "--json", "--quiet"]

    def restore_cmd(self, target, n):
        return [self.exe, "--repo", self.repo_arg(), "restore", "latest", "--target", str(target)]

    def parse_snapshot(self, stdout):
        txt = stdout.strip()
        candidates = [txt] + list(reversed(txt.splitlines()))
        for c in candidates:
            try:
                obj = json.loads(c)
            except ValueError:
                continue
            if isinstance(obj, list) and obj:
                obj = obj[0]
            if isinstance(obj, dict):
                return {"id": obj.get("id"), "summary": obj.get("summary")}
        return {"unparsed_stdout": txt[-500:]}

    def stats(self) -> dict | None:
        try:
            res = subprocess.run([self.exe, "--repo", self.repo_arg(), "stats", "--json"], capture_output=True,
                                 text=True, timeout=600, stdin=subprocess.DEVNULL,
                                 env=with_env(**self.env()))
            return json.loads(res.stdout) if res.returncode == 0 else {"rc": res.returncode,
                                                                        "stderr": res.stderr[-500:]}
        except (ValueError, subprocess.TimeoutExpired, OSError) as e:
            return {"error": str(e)}


TOOL_CLASSES = {c.name: c for c in (RsyncFull, RsyncLinkDest, Restic, Borg, Rustic, Pvsnap)}


# --------------------------------------------------------------------------
# object storage (--storage s3)

S3_KEY_ID = "pvsnapbench"
S3_SECRET = "pvsnap-bench-secret"
S3_REGION = "us-east-1"
S3S_FS_VERSION = "0.14.1"
S3_TOOLS = ["restic", "rustic", "pvsnap"]
S3_DATASETS = ["pg", "src"]


def s3_request(endpoint: str, method: str, path: str, query: dict | None = None, timeout: float = 60) -> bytes:
    """One S3 request with an empty body, signed with AWS Signature V4 (path
    style). Raises RuntimeError naming the request on any HTTP error."""
    now = dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urllib.parse.urlsplit(endpoint).netloc
    q = urllib.parse.quote
    canonical_query = "&".join(f"{q(k, safe='-_.~')}={q(v, safe='-_.~')}" for k, v in sorted((query or {}).items()))
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, q(path, safe="/-_.~"), canonical_query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{day}/{S3_REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + S3_SECRET).encode()
    for part in (day, S3_REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={S3_KEY_ID}/{scope}, SignedHeaders={signed}, "
                                f"Signature={sig}")
    url = endpoint + q(path, safe="/-_.~") + (f"?{canonical_query}" if canonical_query else "")
    req = urllib.request.Request(url, data=b"" if method == "PUT" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"S3 {method} {url}: HTTP {e.code}: {e.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeError(f"S3 {method} {url}: {e}") from None


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """The local S3 server of one run: s3s-fs (objects are files under its
    data folder) or moto's server (objects in its memory)."""

    def __init__(self, kind: str, exe: str, workdir: Path):
        self.kind = kind
        self.exe = exe
        self.data = workdir / "s3data" if kind == "s3s-fs" else None
        self.log_path = workdir / "s3server.log"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        # The server speaks plain http on 127.0.0.1; a CA bundle the machine
        # names for AWS clients only breaks some of them (rclone: "unable to
        # load custom CA bundle, HTTPClient's transport unsupported type").
        return {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": S3_REGION,
                "AWS_DEFAULT_REGION": S3_REGION, "AWS_CA_BUNDLE": None, "AWS_PROFILE": None,
                "AWS_SESSION_TOKEN": None}

    def version(self) -> str:
        if self.kind == "s3s-fs":
            return first_line([self.exe, "--version"])
        res = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('moto'))"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return f"moto {res.stdout.strip()}" if res.returncode == 0 else "moto (version unknown)"

    def start(self) -> None:
        if self.kind == "s3s-fs":
            rmtree(self.data)
            self.data.mkdir(parents=True)
            cmd = [self.exe, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", S3_KEY_ID,
                   "--secret-key", S3_SECRET, str(self.data)]
        else:
            cmd = [self.exe, "-H", "127.0.0.1", "-p", str(self.port)]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + 60
        while True:
            try:
                s3_request(self.endpoint, "GET", "/", timeout=5)  # ListBuckets
                break
            except RuntimeError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_path.read_text(errors="replace")[-1500:]
                    self.stop()
                    raise RuntimeError(f"{self.kind} did not come up on {self.endpoint} ({e}); "
                                       f"its log {self.log_path} ends:\n{tail}") from None
                time.sleep(0.2)
        log(f"S3 server: {self.version()} on {self.endpoint}, data in "
            f"{self.data if self.data else 'server memory'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass

    def info(self) -> dict:
        return {"server": self.kind, "version": self.version(), "endpoint": self.endpoint,
                "data_folder": str(self.data) if self.data else None,
                "data_folder_fs": first_line(["stat", "-f", "-c", "%T", str(self.data)]) if self.data
                else "none: moto keeps objects in its process memory",
                "repo_size_from": "sum of file sizes in the bucket's folder" if self.data
                else "sum of object sizes listed in the bucket"}

    def new_bucket(self, name: str) -> "S3Bucket":
        """Creates the bucket; a server that has died or refuses ends the run
        (every later measurement would fail for the server's sake)."""
        b = S3Bucket(self, name)
        try:
            s3_request(self.endpoint, "PUT", f"/{name}")
        except RuntimeError as e:
            state = f"it exited with status {self.proc.returncode}" if self.proc and self.proc.poll() is not None \
                else "it is still running"
            die(f"the S3 server could not create bucket {name}: {e}; {state}; its log is {self.log_path}")
        return b


class S3Bucket:
    def __init__(self, server: S3Server, name: str):
        self.server = server
        self.name = name
        self.url = f"{server.endpoint}/{name}"

    def listing(self) -> tuple[int, int]:
        """(objects, bytes) as the server lists them."""
        n = size = 0
        token = None
        while True:
            query = {"list-type": "2", **({"continuation-token": token} if token else {})}
            root = ET.fromstring(s3_request(self.server.endpoint, "GET", f"/{self.name}", query))
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            for c in root.iter(f"{ns}Contents"):
                n += 1
                size += int(c.findtext(f"{ns}Size") or 0)
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true" or not token:
                return n, size

    def size(self) -> int:
        """Bytes stored: the objects' files in s3s-fs's data folder, else the listing."""
        if self.server.data is None:
            return self.listing()[1]
        total = 0
        for d, _, names in os.walk(self.server.data / self.name):
            total += sum(os.lstat(os.path.join(d, f)).st_size for f in names)
        return total

    def warm(self) -> None:
        if self.server.data is not None:
            warm(self.server.data / self.name)

    def remove(self) -> None:
        """Frees the bucket's space (s3s-fs: its folder and its metadata files);
        moto's buckets stay in its memory until the run ends."""
        if self.server.data is None:
            return
        rmtree(self.server.data / self.name)
        # s3s-fs keeps two files per object beside the buckets, named after
        # the bucket in unpadded URL-safe base64
        tag = base64.urlsafe_b64encode(self.name.encode()).decode().rstrip("=")
        with os.scandir(self.server.data) as it:
            for e in it:
                if e.name.startswith(f".bucket-{tag}.object-"):
                    os.unlink(e.path)


def cargo_exe() -> str | None:
    return shutil.which("cargo") or find_exe("cargo")


def ensure_s3_server(choice: str, workdir: Path, install_timeout: int) -> S3Server:
    """s3s-fs when installed or installable with cargo within the time box,
    else moto's server (installed with pip when missing); `choice` forces one."""
    why = []
    if choice in ("auto", "s3s-fs"):
        local = workdir / "tools" / "s3s-fs"
        exe = shutil.which("s3s-fs") or (str(local / "bin" / "s3s-fs") if os.access(local / "bin" / "s3s-fs",
                                                                                   os.X_OK) else None)
        if not exe and cargo_exe():
            cmd = ["nice", "-n", "19", cargo_exe(), "install", f"s3s-fs@{S3S_FS_VERSION}", "--features", "binary",
                   "--locked", "--root", str(local)]
            log(f"s3s-fs not found: running `{shlex.join(cmd)}` (time box {install_timeout}s) ...")
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=install_timeout,
                                     stdin=subprocess.DEVNULL)
                if res.returncode == 0:
                    exe = str(local / "bin" / "s3s-fs")
                else:
                    why.append(f"cargo install s3s-fs failed:\n{res.stderr[-1500:]}")
            except subprocess.TimeoutExpired:
                why.append(f"cargo install s3s-fs did not finish within {install_timeout}s")
        elif not exe:
            why.append("s3s-fs is not installed and cargo is missing")
        if exe:
            return S3Server("s3s-fs", exe, workdir)
        if choice == "s3s-fs":
            die("--s3-server s3s-fs: " + "; ".join(why))
        log("; ".join(why) + "; falling back to moto_server")
    exe = shutil.which("moto_server")
    if not exe:
        log("moto_server not found: running `pip install 'moto[server]'` ...")
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "moto[server]"], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=install_timeout)
        exe = shutil.which("moto_server") or shutil.which("moto_server", path=str(Path(sys.executable).parent))
        if res.returncode != 0 or not exe:
            die("no S3 server: " + "; ".join(why + [f"pip install 'moto[server]' failed:\n{res.stderr[-1500:]}"])
                + "\ninstall one: cargo install s3s-fs@0.14.1 --features binary --locked, "
                  "or pip install 'moto[server]'")
    return S3Server("moto", exe, workdir)


def rclone_env(server: S3Server, aux: Path) -> dict:
    """rclone configured by environment variables only: remote `bench:`."""
    conf = aux / "rclone.conf"
    conf.touch()  # empty: nothing from the user's own rclone config
    return {"RCLONE_CONFIG": str(conf), "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": S3_KEY_ID,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": S3_SECRET, "RCLONE_CONFIG_BENCH_REGION": S3_REGION,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}


# --------------------------------------------------------------------------
# benchmark loops


def meta_scan(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, int(st.st_mtime))
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = ("d",)
    return out


def warm(path: Path) -> None:
    """Reads every file below `path` (untimed) so that each tool snapshots from
    the page cache: the run writes many gigabytes (rsync copies, restore
    filesystems) and would otherwise evict the live folder at random, making
    whichever tool came next read from disk. Before a restore the tool's
    repository is read the same way (and the source of `cp -a`): a tool that
    wrote its repository around the page cache, or whose repository was evicted
    by the steps in between, would otherwise restore from disk while `cp -a`
    copies from memory."""
    def read_all(p: str) -> None:
        try:
            with open(p, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
        except OSError:
            pass
    files = [os.path.join(d, n) for d, _, ns in os.walk(path) for n in ns]
    with ThreadPoolExecutor(max_workers=4) as ex:
        list(ex.map(read_all, files))


def reset_live(states: Path, live: Path) -> None:
    """Bring the live directory to state A (same path for every tool).

    A live directory left at state B is synced back with rsync (cheap); if its
    metadata then differs from state A in any way, it is recreated with cp -a.
    """
    if live.is_dir():
        run(["rsync", "-a", "--delete", "--inplace", "--modify-window=-1", f"{states / 'A'}/", f"{live}/"])
        if meta_scan(live) == meta_scan(states / "A"):
            sync()
            return
        log("  live directory differs from state A after rsync; recreating it with cp -a")
    rmtree(live)
    live.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", states / "A", live])
    sync()


def live_to_b(states: Path, live: Path) -> None:
    # --modify-window=-1: compare mtimes to the nanosecond; by default rsync
    # skips a file of the same size changed within the same second.
    run(["rsync", "-a", "--delete", "--inplace", "--modify-window=-1", f"{states / 'B'}/", f"{live}/"])
    sync()


PY_WALK = r"""
import os, sys
def walk(p):
    n = s = 0
    with os.scandir(p) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            n += 1; s += st.st_size
            if e.is_dir(follow_symlinks=False):
                a, b = walk(e.path); n += a; s += b
    return n, s
print(*walk(sys.argv[1]))
"""


RESTORE_WARMUPS = 1
"""Untimed restores of the same kind (same tool, or `cp -a`) run onto their
own fresh filesystem before each timed one, as hyperfine's `--warmup` does.
On the machine these numbers come from, a restore right after another
restore of the same kind is about twice as fast as one after different work
(BENCHMARKS.md, "What remains" and "Memory the host takes back"), whichever
tool it is; without a warm-up the timed restore measures what ran before it
as much as the restore."""


class RestoreTarget:
    """Where a restore step writes: a folder on a freshly made ext4 filesystem
    (a loop-mounted sparse image, made and removed untimed), so every tool and
    the `cp -a` floor start from the same empty filesystem. Restoring into the
    work folder instead makes the result depend on what was deleted there just
    before: ext4 avoids reusing recently freed inodes and its allocator then
    scans, which moved the same restore between 1.4 s and 9 s on this machine."""

    fresh = True

    def __init__(self, workdir: Path, name: str, size_bytes: int):
        self.base = workdir / "restore"
        self.name = name
        self.size = max(size_bytes * 2 + (1 << 30), 2 << 30)
        self.mnt = self.base / f"{name}.mnt"
        self.img = self.base / f"{name}.img"

    def __enter__(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        if not RestoreTarget.fresh:
            t = self.base / self.name
            rmtree(t)
            t.mkdir(parents=True)
            return t
        self._cleanup()
        with open(self.img, "wb") as f:
            f.truncate(self.size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                        str(self.img)], check=True, stdout=subprocess.DEVNULL)
        self.mnt.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop,nodiscard", str(self.img), str(self.mnt)], check=True)
        t = self.mnt / "target"
        t.mkdir()
        sync()
        return t

    def _cleanup(self):
        if self.mnt.exists() and os.path.ismount(self.mnt):
            subprocess.run(["umount", str(self.mnt)], check=False)
        if self.img.exists():
            self.img.unlink()

    def __exit__(self, *exc):
        if RestoreTarget.fresh:
            self._cleanup()
        else:
            rmtree(self.base / self.name)
        return False


def fresh_fs_available() -> bool:
    return os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None and Path("/dev/loop-control").exists()


def run_floors(ds: str, rep: int, states: Path, live: Path, workdir: Path, timed: Timed) -> list[dict]:
    out = []
    reset_live(states, live)
    specs = [
        ("tar|zstd", "initial", f"tar -cf - -C {shlex.quote(str(live))} . | zstd -3 -T2 -q -c > /dev/null", True),
        ("stat-walk-find", "unchanged",
         ["bash", "-c", 'find "$1" -printf "%s %T@\\n" > /dev/null', "_", str(live)], False),
        ("stat-walk-py", "unchanged", [sys.executable, "-c", PY_WALK, str(live)], False),
    ]
    for name, cmp_step, cmd, shell in specs:
        sync()
        r = timed(cmd, shell=shell)
        out.append(floor_sample(ds, rep, name, cmp_step, r))
    for warmup in [True] * RESTORE_WARMUPS + [False]:
        with RestoreTarget(workdir, f"{ds}-floor", du_bytes(states / "B")) as target:
            warm(states / "B")
            sync()
            r = timed(["cp", "-a", f"{states / 'B'}/.", str(target)])
            flushed = timed_sync()
            if not warmup:
                out.append(dict(floor_sample(ds, rep, "cp -a", "restore", r), sync_after_s=flushed))
    for s in out:
        flag = "ok" if s["ok"] else f"FAILED rc={s['rc']}"
        log(f"  floor {s['floor']:<15} {s['wall_s']:8.3f}s cpu {s['cpu_s']:7.2f}s  {flag}")
    return out


def floor_sample(ds, rep, name, cmp_step, r) -> dict:
    return {"kind": "floor", "dataset": ds, "rep": rep, "floor": name, "compares_to": cmp_step,
            "ok": r["rc"] == 0, "rc": r["rc"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "user_s": r["user_s"],
            "sys_s": r["sys_s"], "maxrss_kib": r["maxrss_kib"], "host_reported_mib": r["host_reported_mib"],
            "cmd": r["cmd"], **({"stderr_tail": r["stderr_tail"]} if r["rc"] != 0 else {})}


def run_tool(tool: Tool, ds: str, rep: int, states: Path, live: Path, workdir: Path, timed: Timed,
             seed: int) -> list[dict]:
    samples: list[dict] = []
    rmtree(tool.rundir)
    tool.rundir.mkdir(parents=True)
    tool.aux.mkdir()
    restore_fs = RestoreTarget(workdir, f"{ds}-{tool.name}", du_bytes(states / "B"))
    reset_live(states, live)
    env = tool.env()
    icmd = tool.init_cmd()
    if icmd:
        # In the run folder, so that a binary which takes `s3:http://...` for a
        # relative path makes its folder there, not in the caller's directory.
        r = timed(icmd, env=env, cwd=tool.rundir)
        if r["rc"] == 0 and tool.bucket and tool.bucket.listing()[0] == 0:
            r = dict(r, rc=-1, stderr_tail=r["stderr_tail"] + (
                f"\nerror: {tool.name} init exited 0 but wrote nothing to bucket {tool.bucket.name}: this binary "
                f"does not speak S3 (it took {tool.repo_arg()} for a local folder under {tool.rundir})"))
        if r["rc"] != 0:
            log(f"  {tool.name}: init FAILED rc={r['rc']}\n{r['stderr_tail']}")
            print(f"!!! {tool.name} {ds} init failed (rc={r['rc']}): {shlex.join(map(str, icmd))}\n"
                  f"{r['stderr_tail'][-1500:]}", file=sys.stderr, flush=True)
            samples = [{"kind": "step", "dataset": ds, "rep": rep, "tool": tool.name, "step": "init", "ok": False,
                        "rc": r["rc"], "reason": failure_reason(r), "stderr_tail": r["stderr_tail"],
                        "cmd": r["cmd"]}]
            return samples + not_run(ds, rep, tool.name, STEPS, "init")
    prev_size = tool.repo_bytes()
    for n, step in enumerate(STEPS, start=1):
        if step == "incremental":
            live_to_b(states, live)
        cwd = tool.rundir
        if step == "restore":
            for _ in range(RESTORE_WARMUPS):
                target = restore_fs.__enter__()
                tool.warm_repo()
                sync()
                w = timed(tool.restore_cmd(target, n - 1), env=env, cwd=tool.restore_cwd(target) or tool.rundir)
                restore_fs.__exit__(None, None, None)
                if w["rc"] != 0:
                    log(f"  {tool.name}: warm-up restore failed rc={w['rc']} (the timed one reports it)")
            target = restore_fs.__enter__()
            cmd = tool.restore_cmd(target, n - 1)
            cwd = tool.restore_cwd(target) or tool.rundir
            tool.warm_repo()
        else:
            cmd = tool.snapshot_cmd(live, n)
            warm(live)
        sync()
        r = timed(cmd, env=env, cwd=cwd)
        flushed = timed_sync()
        size = tool.repo_bytes()
        s = {"kind": "step", "dataset": ds, "rep": rep, "tool": tool.name, "step": step, "ok": r["rc"] == 0,
             "rc": r["rc"], "wall_s": r["wall_s"], "user_s": r["user_s"], "sys_s": r["sys_s"], "cpu_s": r["cpu_s"],
             "maxrss_kib": r["maxrss_kib"], "repo_bytes": size, "added_bytes": size - prev_size,
             "host_reported_mib": r["host_reported_mib"], "cmd": r["cmd"]}
        if step == "restore":
            s["sync_after_s"] = flushed
        prev_size = size
        if r["rc"] != 0:
            s["reason"] = failure_reason(r)
            s["stderr_tail"] = r["stderr_tail"]
            s["stdout_tail"] = r["stdout"][-1500:]
        elif step != "restore":
            info = tool.parse_snapshot(r["stdout"])
            if info:
                s["tool_report"] = info
        if step == "restore" and r["rc"] == 0:
            root = locate_restored(target, live)
            v = verify_restore(root, states / "B", seed)
            v["restored_root"] = str(root)
            s["verify"] = v
            s["ok"] = v["ok"]
            s["restored_bytes"] = du_bytes(target)
        if step == "restore":
            restore_fs.__exit__(None, None, None)
        samples.append(s)
        flag = "ok" if s["ok"] else ("RESTORE VERIFY FAILED" if r["rc"] == 0 else f"FAILED rc={r['rc']}")
        log(f"  {tool.name:<15} {step:<12} {r['wall_s']:8.3f}s cpu {r['cpu_s']:7.2f}s "
            f"rss {r['maxrss_kib'] / 1024:7.1f}MiB repo {size / MiB:9.1f}MiB  {flag}")
        if not s["ok"]:
            if r["rc"] != 0:
                print(f"!!! {tool.name} {ds} {step} failed (rc={r['rc']}): {shlex.join(map(str, cmd))}\n"
                      f"{r['stderr_tail'][-1500:]}", file=sys.stderr, flush=True)
            else:
                print(f"!!! RESTORE VERIFY FAILED: {tool.name} on {ds}: {json.dumps(s['verify'])}",
                      file=sys.stderr, flush=True)
            samples += not_run(ds, rep, tool.name, STEPS[n:], step)
            break
    if isinstance(tool, Pvsnap) and samples and samples[-1]["ok"]:
        samples[-1]["repo_stats"] = tool.stats()
        if ds == "img":
            samples += mount_vs_dump(tool, ds, rep, workdir, timed)
    rmtree(tool.rundir)
    return samples


def failure_reason(r: dict) -> str:
    """A failed command's error message: the last stderr line that starts
    with "error" (past a usage text), else its last line."""
    lines = [x.strip() for x in (r.get("stderr_tail") or "").splitlines() if x.strip()]
    errors = [x for x in lines if x.lower().startswith("error")]
    return ((errors or lines)[-1] if lines else f"exit status {r.get('rc')}, nothing on stderr")[:300]


def not_run(ds: str, rep: int, tool: str, steps: list[str], failed: str) -> list[dict]:
    """Samples for the steps that could not run after `failed` did: the report
    shows them as failed, not as missing."""
    return [{"kind": "step", "dataset": ds, "rep": rep, "tool": tool, "step": st, "ok": False, "rc": None,
             "not_run": f"not run: {failed} failed before it"} for st in steps]


def run_copy(ds: str, rep: int, states: Path, live: Path, workdir: Path, timed: Timed, server: S3Server,
             pvsnap: str, rclone: str | None) -> list[dict]:
    """`pvsnap copy --to s3:...` of a local pvsnap repository (the dataset's
    states A and B as two snapshots, built untimed) into a fresh bucket,
    against `rclone sync` of the same repository folder into another fresh
    bucket: the floor for moving those bytes to the server."""
    rundir = workdir / "runs" / ds / "copy"
    rmtree(rundir)
    (rundir / "aux").mkdir(parents=True)
    src = Pvsnap(pvsnap, rundir)
    base = {"kind": "copy", "dataset": ds, "rep": rep, "step": "copy"}

    def failed_both(why: str) -> list[dict]:
        log(f"  copy: {why}")
        return [dict(base, who=w, ok=False, rc=None, reason=why) for w in ("pvsnap copy", "rclone sync")]

    reset_live(states, live)
    for cmd in (src.init_cmd(), src.snapshot_cmd(live, 1), None, src.snapshot_cmd(live, 2)):
        if cmd is None:
            live_to_b(states, live)
            continue
        res = run(cmd, check=False, capture=True, timeout=timed.timeout, cwd=rundir)
        if res.returncode != 0:
            return failed_both(f"the local pvsnap repository to copy could not be built: {shlex.join(cmd)}: "
                               f"{(res.stderr or '').strip()[-300:]}")
    files = [os.path.join(d, f) for d, _, names in os.walk(src.repo) for f in names]
    local_files, local_bytes = len(files), sum(os.lstat(f).st_size for f in files)
    out = []
    order = ["pvsnap copy", "rclone sync"]
    for who in order[rep % 2:] + order[:rep % 2]:  # the order rotates between repetitions
        bucket = server.new_bucket(f"{ds}-{'pvsnap-copy' if who == 'pvsnap copy' else 'rclone'}-{rep}")
        s = dict(base, who=who, bucket=bucket.name, local_repo_bytes=local_bytes, local_repo_files=local_files)
        if who == "rclone sync" and not rclone:
            out.append(dict(s, ok=False, rc=None, reason="rclone is not installed (apt-get install rclone)"))
            continue
        if who == "pvsnap copy":
            env = src.env() | server.env() | {"XDG_CACHE_HOME": str(rundir / "aux" / "cache")}
            # The target is a repository of its own, made (untimed) first:
            # unencrypted like the source, so blobs travel as stored.
            made = run([pvsnap, "--repo", f"s3:{bucket.url}", "init"], check=False, capture=True,
                       timeout=timed.timeout, cwd=rundir, env=with_env(**env))
            if made.returncode != 0:
                out.append(dict(s, ok=False, rc=made.returncode,
                                reason=f"pvsnap init of the copy target failed: {(made.stderr or '').strip()[-300:]}"))
                continue
            cmd = [pvsnap, "--repo", str(src.repo), "copy", "--to", f"s3:{bucket.url}", "--json"]
        else:
            env = server.env() | rclone_env(server, rundir / "aux")
            cmd = [rclone, "sync", f"{src.repo}/", f"bench:{bucket.name}"]
        warm(src.repo)
        sync()
        r = timed(cmd, env=env, cwd=rundir)
        try:
            objects, stored = bucket.listing()
        except RuntimeError as e:
            objects, stored = 0, 0
            r = dict(r, rc=r["rc"] or -1, stderr_tail=r["stderr_tail"] + f"\nerror: listing the bucket: {e}")
        s.update(ok=r["rc"] == 0, rc=r["rc"], wall_s=r["wall_s"], user_s=r["user_s"], sys_s=r["sys_s"],
                 cpu_s=r["cpu_s"], maxrss_kib=r["maxrss_kib"], repo_bytes=bucket.size(), objects=objects,
                 listed_bytes=stored, cmd=r["cmd"])
        if r["rc"] != 0:
            s.update(reason=failure_reason(r), stderr_tail=r["stderr_tail"])
        elif objects == 0:
            s.update(ok=False, reason=f"{who} exited 0 but wrote nothing to bucket {bucket.name}")
        elif who == "rclone sync" and (objects, stored) != (local_files, local_bytes):
            s.update(ok=False, reason=f"the bucket holds {objects} objects, {stored} bytes; the repository "
                                      f"folder {local_files} files, {local_bytes} bytes")
        elif who == "pvsnap copy":
            s.update(verify_copy(pvsnap, bucket, env, r["stdout"]))
        out.append(s)
        flag = "ok" if s["ok"] else f"FAILED: {s.get('reason')}"
        log(f"  {who:<15} copy         {r['wall_s']:8.3f}s cpu {r['cpu_s']:7.2f}s "
            f"rss {r['maxrss_kib'] / 1024:7.1f}MiB bucket {s['repo_bytes'] / MiB:9.1f}MiB  {flag}")
        if not s["ok"]:
            print(f"!!! {who} {ds} failed: {shlex.join(map(str, cmd))}\n{s['reason']}", file=sys.stderr, flush=True)
        bucket.remove()
    rmtree(rundir)
    return out


def verify_copy(pvsnap: str, bucket: S3Bucket, env: dict, stdout: str) -> dict:
    """After `pvsnap copy`: its --json summary, and the copy itself: both
    snapshots listed and `pvsnap check` clean on the bucket."""
    out: dict = {}
    try:
        obj = json.loads(stdout)
        out["tool_report"] = {k: obj.get(k) for k in ("snapshots_copied", "blobs_copied", "bytes_sent",
                                                      "duration_s")} if isinstance(obj, dict) else obj
    except ValueError:
        out["tool_report"] = {"unparsed_stdout": stdout[-500:]}
    penv = with_env(**env)
    repo = f"s3:{bucket.url}"
    snaps = subprocess.run([pvsnap, "--repo", repo, "snapshots", "--json"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, env=penv)
    try:
        n = len(json.loads(snaps.stdout)) if snaps.returncode == 0 else None
    except ValueError:
        n = None
    if n != 2:
        return out | {"ok": False, "reason": f"after the copy, `pvsnap --repo {repo} snapshots --json` lists {n} "
                                             f"snapshots, not 2: {snaps.stderr.strip()[-300:]}"}
    chk = subprocess.run([pvsnap, "--repo", repo, "check"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, env=penv)
    if chk.returncode != 0:
        return out | {"ok": False, "reason": f"`pvsnap --repo {repo} check` after the copy: rc={chk.returncode}: "
                                             f"{(chk.stderr or chk.stdout).strip()[-300:]}"}
    return out | {"verify": "2 snapshots, pvsnap check clean"}


def mount_vs_dump(tool: "Pvsnap", ds: str, rep: int, workdir: Path, timed: Timed) -> list[dict]:
    """Sequential read of the dataset's one large file through `pvsnap mount`
    (`dd bs=1M`) against `pvsnap dump` of the same file, both to /dev/null."""
    out = []
    env = tool.env()
    ls = subprocess.run([tool.exe, "--repo", tool.repo_arg(), "ls", "latest", "--json"], capture_output=True,
                        text=True, stdin=subprocess.DEVNULL, env=with_env(**env))
    try:
        rows = [e for e in map(json.loads, ls.stdout.splitlines()) if e.get("type") == "file"]
    except json.JSONDecodeError as e:
        log(f"  pvsnap mount-vs-dump: `ls --json` printed a line that is not JSON: {e}")
        return out
    if ls.returncode != 0 or not rows:
        log(f"  pvsnap mount-vs-dump: no file to read ({ls.stderr.strip()[-200:]})")
        return out
    path, size = rows[0]["path"], int(rows[0]["size"])
    mnt = workdir / "mnt" / ds
    mnt.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    r = timed(f"{q(tool.exe)} --repo {q(tool.repo_arg())} dump latest {q(path)} > /dev/null", shell=True, env=env)
    out.append({"kind": "extra", "what": "dump", "dataset": ds, "rep": rep, "ok": r["rc"] == 0, "rc": r["rc"],
                "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": size, "cmd": r["cmd"]})
    proc = subprocess.Popen([tool.exe, "--repo", tool.repo_arg(), "mount", str(mnt), "--snapshot", "latest"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=with_env(**env))
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mnt) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not os.path.ismount(mnt):
            why = proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None else "timeout"
            log(f"  pvsnap mount did not come up: {why}")
            out.append({"kind": "extra", "what": "mount-read", "dataset": ds, "rep": rep, "ok": False, "rc": -1,
                        "wall_s": None, "cpu_s": None, "bytes": size, "cmd": "mount"})
            return out
        r = timed(["dd", f"if={mnt}{path}", "of=/dev/null", "bs=1M"])
        out.append({"kind": "extra", "what": "mount-read", "dataset": ds, "rep": rep, "ok": r["rc"] == 0,
                    "rc": r["rc"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "bytes": size, "cmd": r["cmd"]})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    for s in out:
        mbps = s["bytes"] / s["wall_s"] / 1e6 if s["ok"] and s["wall_s"] else 0
        log(f"  pvsnap {s['what']:<12} {s['wall_s'] or 0:8.3f}s {mbps:8.0f} MB/s  {'ok' if s['ok'] else 'FAILED'}")
    return out


# --------------------------------------------------------------------------
# reporting


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(samples: list[dict]) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for s in samples:
        if s["kind"] == "step" and s["step"] in STEPS:
            groups.setdefault((s["dataset"], s["tool"], s["step"]), []).append(s)
        elif s["kind"] == "floor":
            groups.setdefault((s["dataset"], "floor:" + s["floor"], s["compares_to"]), []).append(s)
        elif s["kind"] == "copy":
            groups.setdefault((s["dataset"], s["who"], "copy"), []).append(s)
    out = {}
    for key, ss in groups.items():
        ok = [s for s in ss if s["ok"]]
        out["|".join(key)] = {
            "dataset": key[0], "tool": key[1], "step": key[2], "n": len(ok), "failures": len(ss) - len(ok),
            "wall_s": med([s["wall_s"] for s in ok]), "cpu_s": med([s["cpu_s"] for s in ok]),
            "maxrss_kib": med([s["maxrss_kib"] for s in ok]),
            "repo_bytes": med([s.get("repo_bytes") for s in ok]),
            "added_bytes": med([s.get("added_bytes") for s in ok]),
            "sync_after_s": med([s.get("sync_after_s") for s in ok]),
            "until_on_disk_s": med([s["wall_s"] + s["sync_after_s"] for s in ok
                                    if s.get("sync_after_s") is not None]),
        }
    for what in ("dump", "mount-read"):
        for ds in {s["dataset"] for s in samples if s["kind"] == "extra"}:
            ok = [s for s in samples if s["kind"] == "extra" and s["what"] == what and s["dataset"] == ds and s["ok"]]
            if ok:
                out[f"{ds}|pvsnap-{what}|read"] = {"dataset": ds, "tool": f"pvsnap-{what}", "step": "read", "n": len(ok),
                                                   "failures": 0, "wall_s": med([s["wall_s"] for s in ok]),
                                                   "cpu_s": med([s["cpu_s"] for s in ok]), "maxrss_kib": None,
                                                   "repo_bytes": None, "added_bytes": None,
                                                   "mb_per_s": med([s["bytes"] / s["wall_s"] / 1e6 for s in ok])}
    # stat-walk: the faster of the two walks
    for ds in {k[0] for k in groups}:
        cands = [out.get(f"{ds}|floor:stat-walk-find|unchanged"), out.get(f"{ds}|floor:stat-walk-py|unchanged")]
        cands = [c for c in cands if c and c["wall_s"] is not None]
        if cands:
            best = min(cands, key=lambda c: c["wall_s"])
            out[f"{ds}|floor:stat-walk|unchanged"] = dict(best, tool="floor:stat-walk",
                                                          chosen=best["tool"].split(":")[1])
    return out


GOALS = [
    # (label, datasets or None for all, step, metric, max ratio vs restic)
    ("initial snapshot <= 0.5x restic", None, "initial", "wall_s", 0.5),
    ("incremental pg <= 0.5x restic", ["pg"], "incremental", "wall_s", 0.5),
    ("incremental src <= 0.3x restic", ["src"], "incremental", "wall_s", 0.3),
    ("unchanged <= 0.1x restic", None, "unchanged", "wall_s", 0.1),
    ("restore pg <= 0.5x restic", ["pg"], "restore", "wall_s", 0.5),
    ("restore src <= 0.3x restic", ["src"], "restore", "wall_s", 0.3),
]

S3_GOALS = [
    # against restic on the same S3 server (--storage s3)
    ("initial snapshot <= 0.5x restic", None, "initial", "wall_s", 0.5),
    ("incremental <= 0.5x restic", None, "incremental", "wall_s", 0.5),
    ("unchanged <= 0.1x restic", None, "unchanged", "wall_s", 0.1),
    ("restore <= 0.5x restic", None, "restore", "wall_s", 0.5),
]


def per_rep_walls(samples: list[dict], ds: str, who: str, step: str) -> dict[int, float]:
    """Wall seconds of one tool's step (or one floor, `floor:NAME`) by repetition."""
    out = {}
    for s in samples:
        if s.get("dataset") != ds or not s.get("ok") or s.get("wall_s") is None:
            continue
        if who.startswith("floor:"):
            if s["kind"] == "floor" and s["floor"] == who[6:] and s["compares_to"] == step:
                out[s["rep"]] = s["wall_s"]
        elif s["kind"] == "step" and s["tool"] == who and s["step"] == step:
            out[s["rep"]] = s["wall_s"]
        elif s["kind"] == "copy" and s["who"] == who and step == "copy":
            out[s["rep"]] = s["wall_s"]
    return out


def held_in(samples: list[dict] | None, ds: str, step: str, ref: str, target: float,
            who: str = "pvsnap") -> tuple[int, int] | None:
    """In how many repetitions a wall-time goal held when pvsnap is compared
    with the reference of the same repetition (which ran minutes apart, not
    in another run): a median that passes or misses narrowly can then be
    told apart from one that holds every time."""
    if not samples:
        return None
    p, r = per_rep_walls(samples, ds, who, step), per_rep_walls(samples, ds, ref, step)
    reps = sorted(set(p) & set(r))
    if not reps:
        return None
    return sum(1 for k in reps if r[k] and p[k] / r[k] <= target), len(reps)


def ratio_goal(label: str, ds: str, p: dict | None, r: dict | None, target: float, target_text: str,
               held: tuple[int, int] | None) -> dict | None:
    """A wall-time goal row: pvsnap (or its copy) against a reference. A side
    that ran and failed in every repetition makes a FAILED row, not none."""
    if not p or not r:
        return None
    row = {"goal": label, "dataset": ds, "pvsnap": p["wall_s"], "reference": r["wall_s"], "ratio": None,
           "target": target_text, "pass": False}
    if p["wall_s"] is None:
        return row | {"failed": "pvsnap failed"}
    if not r["wall_s"]:
        return row | {"pass": None, "failed": "reference failed"}
    ratio = p["wall_s"] / r["wall_s"]
    return row | {"ratio": ratio, "pass": ratio <= target, "held_in": held}


def evaluate_s3_goals(summary: dict, datasets: list[str], samples: list[dict] | None) -> list[dict]:
    rows = []
    g = summary.get
    for label, _, step, _, target in S3_GOALS:
        for ds in datasets:
            rows.append(ratio_goal(label, ds, g(f"{ds}|pvsnap|{step}"), g(f"{ds}|restic|{step}"), target,
                                   f"<= {target}x restic", held_in(samples, ds, step, "restic", target)))
    for ds in datasets:
        rows.append(ratio_goal("copy to the server <= 1.2x rclone sync", ds, g(f"{ds}|pvsnap copy|copy"),
                               g(f"{ds}|rclone sync|copy"), 1.2, "<= 1.2x rclone sync",
                               held_in(samples, ds, "copy", "rclone sync", 1.2, who="pvsnap copy")))
    return [r for r in rows if r]


def evaluate_goals(summary: dict, datasets: list[str], samples: list[dict] | None = None,
                   storage: str = "local") -> list[dict]:
    if storage == "s3":
        return evaluate_s3_goals(summary, datasets, samples)
    rows = []
    g = summary.get
    for label, dss, step, metric, target in GOALS:
        for ds in dss or datasets:
            if ds not in datasets:
                continue
            row = ratio_goal(label, ds, g(f"{ds}|pvsnap|{step}"), g(f"{ds}|restic|{step}"), target,
                             f"<= {target}x restic", held_in(samples, ds, step, "restic", target))
            if row:
                rows.append(row)
    for ds in datasets:
        p, t = g(f"{ds}|pvsnap|initial"), g(f"{ds}|floor:tar|zstd|initial")
        if p and t and p["wall_s"] is not None and t["wall_s"]:
            ratio = p["wall_s"] / t["wall_s"]
            rows.append({"goal": "initial snapshot within 1.2x tar|zstd", "dataset": ds, "pvsnap": p["wall_s"],
                         "reference": t["wall_s"], "ratio": ratio, "target": "<= 1.2x tar|zstd -3 -T2",
                         "pass": ratio <= 1.2, "held_in": held_in(samples, ds, "initial", "floor:tar|zstd", 1.2)})
    p, r = g("pg|pvsnap|incremental"), g("pg|restic|incremental")
    if "pg" in datasets and p and r and p.get("added_bytes") is not None and r.get("added_bytes"):
        rows.append({"goal": "incremental pg bytes added <= restic (MiB)", "dataset": "pg",
                     "pvsnap": p["added_bytes"] / 2**20, "reference": r["added_bytes"] / 2**20,
                     "ratio": p["added_bytes"] / r["added_bytes"], "target": "<= 1.0x restic",
                     "pass": p["added_bytes"] <= r["added_bytes"]})
    for ds in datasets:
        p, c = g(f"{ds}|pvsnap|restore"), g(f"{ds}|floor:cp -a|restore")
        if p and c and p["wall_s"] is not None and c["wall_s"]:
            rows.append({"goal": "restore never slower than cp -a", "dataset": ds, "pvsnap": p["wall_s"],
                         "reference": c["wall_s"], "ratio": p["wall_s"] / c["wall_s"], "target": "<= 1.0x cp -a",
                         "pass": p["wall_s"] <= c["wall_s"],
                         "held_in": held_in(samples, ds, "restore", "floor:cp -a", 1.0)})
    for ds in datasets:
        pr = [g(f"{ds}|pvsnap|{s}") for s in STEPS]
        rr = [g(f"{ds}|restic|{s}") for s in STEPS]
        pm = max((x["maxrss_kib"] for x in pr if x and x["maxrss_kib"]), default=None)
        rm = max((x["maxrss_kib"] for x in rr if x and x["maxrss_kib"]), default=None)
        if pm and rm:
            rows.append({"goal": "peak RSS MiB <= restic (max over steps)", "dataset": ds, "pvsnap": pm / 1024,
                         "reference": rm / 1024, "ratio": pm / rm, "target": "<= 1.0x restic", "pass": pm <= rm})
    for ds in datasets:
        m, d = g(f"{ds}|pvsnap-mount-read|read"), g(f"{ds}|pvsnap-dump|read")
        if m and d and m.get("mb_per_s") and d.get("mb_per_s"):
            ratio = m["mb_per_s"] / d["mb_per_s"]
            rows.append({"goal": "mount sequential read MB/s >= 0.7x dump", "dataset": ds, "pvsnap": m["mb_per_s"],
                         "reference": d["mb_per_s"], "ratio": ratio, "target": ">= 0.7x pvsnap dump",
                         "pass": ratio >= 0.7})
    return rows


def fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def mib(v):
    return "-" if v is None else f"{v / MiB:.1f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    L = ["# pvsnap comparison benchmark", ""]
    L += [f"- date (UTC): {report['date']}",
          f"- command: `{report['command']}`",
          f"- machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']:.1f} GiB RAM, kernel {m['kernel']}, "
          f"{m['os']}, workdir filesystem {m['workdir_fs']}",
          f"- memory reclaim: {'; '.join(m.get('memory_reclaim') or ['none found'])}",
          f"- profile: {'smoke' if report['smoke'] else 'full'}, repetitions: {report['reps']}, "
          f"seed: {report['seed']}, total run time {report['total_seconds']:.0f}s",
          "- cache: warm-cache runs: the live folder is read (untimed) before every snapshot step; `sync` is called before and after every step.",
          f"- restores (and the `cp -a` floor) go into: {report.get('restores_into', 'work folder')}; "
          f"untimed warm-up restores of the same kind before each: {report.get('restore_warmups', 0)}.",
          "- values are medians over repetitions; ratios are wall-time ratios of medians."]
    st = report.get("storage") or {"mode": "local"}
    if st["mode"] == "s3":
        L += [f"- storage: every tool's repository is a fresh bucket on one local S3 server: {st['version']} "
              f"({st['server']}) at {st['endpoint']}, data folder {st['data_folder'] or '-'} "
              f"(filesystem: {st['data_folder_fs']}); repository size: {st['repo_size_from']}"]
    L.append("")
    L += ["## Tool versions", ""]
    for k, v in report["versions"].items():
        L.append(f"- {k}: {v}")
    L.append("")
    if report["skipped_tools"]:
        L += ["Skipped tools:", ""] + [f"- {k}: {v}" for k, v in report["skipped_tools"].items()] + [""]
    notes = [f"- {t}: {n}" for t, n in report["tool_notes"].items() if n]
    if notes:
        L += ["## Tool settings", ""] + notes + [""]
    L += ["## Datasets", "", "| dataset | params | A files | A MiB | B files | B MiB |", "|---|---|---:|---:|---:|---:|"]
    for ds, meta in report["datasets"].items():
        L.append(f"| {ds} | {json.dumps(meta['ident']['params'])} | {meta['A']['files']} | {mib(meta['A']['bytes'])} "
                 f"| {meta['B']['files']} | {mib(meta['B']['bytes'])} |")
    L.append("")
    summ = report["summary"]
    for ds in report["datasets"]:
        L += [f"## {ds}", "",
              "| tool | step | wall s | x pvsnap | x restic | CPU s | peak RSS MiB | repo MiB | added MiB | n |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for tool in report["tools"]:
            for step in STEPS:
                e = summ.get(f"{ds}|{tool}|{step}")
                if not e:
                    continue
                p = summ.get(f"{ds}|pvsnap|{step}")
                r = summ.get(f"{ds}|restic|{step}")
                xp = e["wall_s"] / p["wall_s"] if p and p["wall_s"] and e["wall_s"] is not None else None
                xr = e["wall_s"] / r["wall_s"] if r and r["wall_s"] and e["wall_s"] is not None else None
                fail = f" ({e['failures']} failed)" if e["failures"] else ""
                L.append(f"| {tool} | {step} | {fmt(e['wall_s'])} | {fmt(xp, 2)} | {fmt(xr, 2)} | {fmt(e['cpu_s'], 2)} "
                         f"| {mib(e['maxrss_kib'] * KiB if e['maxrss_kib'] is not None else None)} "
                         f"| {mib(e['repo_bytes'])} | {mib(e['added_bytes'])} | {e['n']}{fail} |")
        L += ["", "| floor | compares to | wall s | CPU s | peak RSS MiB | n |", "|---|---|---:|---:|---:|---:|"]
        for fl in ["tar|zstd", "stat-walk-find", "stat-walk-py", "stat-walk", "cp -a"]:
            for step in ("initial", "unchanged", "restore"):
                e = summ.get(f"{ds}|floor:{fl}|{step}")
                if e:
                    name = fl.replace("|", "\\|")
                    if fl == "stat-walk":
                        name += f" (= {e['chosen']}, the faster)"
                    L.append(f"| {name} | {step} | {fmt(e['wall_s'])} | {fmt(e['cpu_s'], 2)} "
                             f"| {mib(e['maxrss_kib'] * KiB if e['maxrss_kib'] is not None else None)} | {e['n']} |")
        L.append("")
        copies = [(w, summ.get(f"{ds}|{w}|copy")) for w in ("pvsnap copy", "rclone sync")]
        if any(e for _, e in copies):
            floor = summ.get(f"{ds}|rclone sync|copy") or {}
            L += ["Copy of a local pvsnap repository (states A and B as two snapshots) to a fresh bucket.", "",
                  "| who | wall s | x rclone sync | CPU s | peak RSS MiB | bucket MiB | n |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
            for w, e in copies:
                if not e:
                    continue
                x = e["wall_s"] / floor["wall_s"] if floor.get("wall_s") and e["wall_s"] is not None else None
                fail = f" ({e['failures']} failed)" if e["failures"] else ""
                L.append(f"| {w} | {fmt(e['wall_s'])} | {fmt(x, 2)} | {fmt(e['cpu_s'], 2)} "
                         f"| {mib(e['maxrss_kib'] * KiB if e['maxrss_kib'] is not None else None)} "
                         f"| {mib(e['repo_bytes'])} | {e['n']}{fail} |")
            L.append("")
        durable = [(tool, summ.get(f"{ds}|{tool}|restore")) for tool in report["tools"]]
        durable.append(("cp -a (floor)", summ.get(f"{ds}|floor:cp -a|restore")))
        durable = [(t, e) for t, e in durable if e and e.get("until_on_disk_s") is not None]
        cp = summ.get(f"{ds}|floor:cp -a|restore") or {}
        if durable:
            L += ["Restore until on disk: the restore, then the `sync` after it (not part of any goal; "
                  "medians of each column and of the per-repetition sums).", "",
                  "| who | restore s | sync after s | until on disk s | x cp -a |", "|---|---:|---:|---:|---:|"]
            for t, e in durable:
                x = (e["until_on_disk_s"] / cp["until_on_disk_s"]) if cp.get("until_on_disk_s") else None
                L.append(f"| {t} | {fmt(e['wall_s'])} | {fmt(e['sync_after_s'])} | {fmt(e['until_on_disk_s'])} "
                         f"| {fmt(x, 2)} |")
            L.append("")
    if report["goals"]:
        against = "restic on the same S3 server, and rclone sync" if st["mode"] == "s3" else "restic"
        L += [f"## Goals (pvsnap vs {against}, medians of wall time)", ""]
        if report["smoke"]:
            L += ["Smoke profile: datasets are tiny and fixed costs (process start, key derivation) dominate, "
                  "so these results only show that the pipeline works.", ""]
        L += ["The result compares medians. \"Held in\" counts the repetitions in which the goal held against "
              "the reference of the same repetition.", "",
              "| goal | dataset | pvsnap | reference | ratio | target | result | held in |",
              "|---|---|---:|---:|---:|---|---|---|"]
        for gr in report["goals"]:
            def cell(t: str) -> str:
                return t.replace("|", "\\|")
            held = gr.get("held_in")
            held_s = f"{held[0]} of {held[1]}" if held else "-"
            result = f"FAILED ({gr['failed']})" if gr.get("failed") else ("PASS" if gr["pass"] else "MISS")
            L.append(f"| {cell(gr['goal'])} | {gr['dataset']} | {fmt(gr['pvsnap'])} | {fmt(gr['reference'])} "
                     f"| {fmt(gr['ratio'], 2)} | {cell(gr['target'])} | {result} | {held_s} |")
        L.append("")
    else:
        L += ["## Goals", "", "Not evaluated: needs both pvsnap and restic results.", ""]
    fails = report["failures"]
    L += ["## Failures", ""]
    L += [f"- {f.replace(chr(10), ' ')}" for f in fails] if fails else ["None."]
    L.append("")
    return "\n".join(L)


def machine_info(workdir: Path) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    osname = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    fs = first_line(["stat", "-f", "-c", "%T", str(workdir)])
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "ram_gib": ram, "kernel": platform.release(), "os": osname,
            "workdir_fs": fs, "python": platform.python_version(), "memory_reclaim": memory_reclaim()}


PAGE_REPORTING_ORDER = Path("/sys/module/page_reporting/parameters/page_reporting_order")


def set_page_reporting_order(order: int) -> None:
    """Report only free blocks of 2^order pages to the host for the rest of
    the run, and put the old value back when the harness exits. Freed memory
    handed back to the host at the default order made the same restore take
    one or three times as long, whichever tool it was (BENCHMARKS.md,
    "Memory the host takes back")."""
    try:
        old = PAGE_REPORTING_ORDER.read_text().strip()
    except OSError as e:
        die(f"--page-reporting-order: cannot read {PAGE_REPORTING_ORDER} ({e}); "
            "this kernel does not report free pages, so leave the option out")
    try:
        PAGE_REPORTING_ORDER.write_text(str(order))
    except OSError as e:
        die(f"--page-reporting-order {order}: the kernel refused it ({e}); "
            "it takes 0 to 10 (the largest block order) and needs root")

    def put_back():
        try:
            PAGE_REPORTING_ORDER.write_text(old)
        except OSError as e:
            print(f"could not put page_reporting_order back to {old}: {e}; "
                  f"run: echo {old} > {PAGE_REPORTING_ORDER}", file=sys.stderr)

    atexit.register(put_back)
    # A terminated run exits through atexit too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log(f"page_reporting_order {old} -> {order} for this run")


def memory_reclaim() -> list[str]:
    """What takes memory away from under a run, where the kernel says so: free
    page reporting to the host, and DAMON schemes (kdamond) that page out or
    reclaim memory nobody touched for a while. Both move restore times
    (BENCHMARKS.md, "Memory the host takes back")."""
    out = []
    pr = Path("/sys/module/page_reporting/parameters")
    if pr.is_dir():
        vals = {}
        for name in ("page_reporting_order", "min_free_ms"):
            try:
                vals[name] = (pr / name).read_text().strip()
            except OSError:
                pass
        out.append("free page reporting to the host" + "".join(f", {k}={v}" for k, v in vals.items()))
    for ctx in sorted(glob.glob("/sys/kernel/mm/damon/admin/kdamonds/*/contexts/*")):
        kd = Path(ctx).parents[1]
        try:
            if (kd / "state").read_text().strip() != "on":
                continue
            aggr_us = int((Path(ctx) / "monitoring_attrs" / "intervals" / "aggr_us").read_text())
            ops = (Path(ctx) / "operations").read_text().strip()
            for sch in sorted(glob.glob(f"{ctx}/schemes/[0-9]*")):
                sp = Path(sch)
                action = (sp / "action").read_text().strip()
                age = int((sp / "access_pattern" / "age" / "min").read_text())
                out.append(f"DAMON ({ops}) {action} of memory idle for {age * aggr_us / 1e6:g} s or more")
        except (OSError, ValueError):
            continue
    return out


def default_pvsnap() -> str:
    repo_root = Path(__file__).resolve().parents[2]
    cand = repo_root / "target" / "release" / "pvsnap"
    if os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which("pvsnap") or str(cand)


def main() -> int:
    if any(a == "--scale" or a.startswith("--scale=") for a in sys.argv[1:]):
        # trees of many small files against the file count: scale.py
        import scale
        return scale.main(sys.argv[1:])
    ap = argparse.ArgumentParser(description="pvsnap comparison benchmark (see README.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny datasets, 1 repetition (about 2 minutes)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, smoke 1)")
    ap.add_argument("--datasets", default=None,
                    help="comma list of pg,src,img,media (default: all; --storage s3: pg,src)")
    ap.add_argument("--tools", default=None,
                    help="comma list of rsync-full,rsync-linkdest,restic,borg,rustic,pvsnap "
                         "(default: all; rustic only when already installed)")
    ap.add_argument("--pvsnap", default=None, help="pvsnap binary (default: <repo>/target/release/pvsnap or PATH)")
    ap.add_argument("--workdir", default="/work/benchdata", help="scratch directory (datasets, repos, restores)")
    ap.add_argument("--restore-into", choices=["fresh-fs", "workdir"], default=None,
                    help="restore onto a freshly made ext4 loop filesystem each time (default when root) "
                         "or into the work folder")
    ap.add_argument("--restore-warmups", type=int, default=1,
                    help="untimed restores of the same kind before each timed restore and cp -a (default 1)")
    ap.add_argument("--out", default=None, help="JSON output with all raw samples (default WORKDIR/results.json)")
    ap.add_argument("--markdown", default=None, help="Markdown report (default WORKDIR/results.md)")
    ap.add_argument("--seed", type=int, default=42, help="dataset generator seed")
    ap.add_argument("--regen", action="store_true", help="regenerate datasets even if cached")
    ap.add_argument("--step-timeout", type=float, default=None, help="seconds per timed step (default 7200, smoke 300)")
    ap.add_argument("--rustic-install-timeout", type=int, default=1800, help="time box for cargo install rustic-rs")
    ap.add_argument("--storage", choices=["local", "s3"], default="local",
                    help="where repositories live: a local folder, or a fresh bucket on a local S3 server per "
                         "tool run (pvsnap, restic, rustic; plus pvsnap copy vs rclone sync)")
    ap.add_argument("--s3-server", choices=["auto", "s3s-fs", "moto"], default="auto",
                    help="--storage s3: the server (auto: s3s-fs, installed with cargo when missing, else moto)")
    ap.add_argument("--s3-server-install-timeout", type=int, default=1800,
                    help="time box for cargo install s3s-fs (and pip install moto[server])")
    ap.add_argument("--page-reporting-order", type=int, default=None, metavar="N",
                    help="for the run, hand only free blocks of 2^N pages back to the host "
                         "(free page reporting; root; put back at exit). See BENCHMARKS.md")
    ap.add_argument("--report-from", default=None, metavar="JSON",
                    help="re-evaluate the goals of a saved run and print its Markdown report (runs nothing)")
    args = ap.parse_args()

    if args.report_from:
        report = json.loads(Path(args.report_from).read_text())
        datasets = sorted({k.split("|")[0] for k in report["summary"]}, key=ALL_DATASETS.index)
        if {"pvsnap", "restic"} <= set(report["tools"]):
            report["goals"] = evaluate_goals(report["summary"], datasets, report.get("samples"),
                                             (report.get("storage") or {}).get("mode", "local"))
        md = markdown(report)
        if args.markdown:
            Path(args.markdown).write_text(md)
        print(md)
        return 0

    t_start = time.monotonic()
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])
    reps = args.reps if args.reps is not None else (1 if args.smoke else 3)
    if reps < 1:
        die("--reps must be >= 1")
    s3 = args.storage == "s3"
    if args.datasets is None:
        args.datasets = ",".join(S3_DATASETS if s3 else ALL_DATASETS)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    bad = [d for d in datasets if d not in ALL_DATASETS]
    if bad:
        die(f"unknown dataset(s) {bad}; choose from {ALL_DATASETS}")
    explicit_tools = args.tools is not None
    tools = [t.strip() for t in (args.tools or ",".join(ALL_TOOLS)).split(",") if t.strip()]
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad:
        die(f"unknown tool(s) {bad}; choose from {ALL_TOOLS}")
    workdir = Path(args.workdir).resolve()
    want_fresh = args.restore_into != "workdir"
    if args.restore_into == "fresh-fs" and not fresh_fs_available():
        print("--restore-into fresh-fs needs root, mkfs.ext4 and loop devices", file=sys.stderr)
        return 2
    RestoreTarget.fresh = want_fresh and fresh_fs_available()
    global RESTORE_WARMUPS
    RESTORE_WARMUPS = max(0, args.restore_warmups)
    log(f"restores go {'onto a fresh ext4 filesystem each' if RestoreTarget.fresh else 'into the work folder'}")
    repo_root = Path(__file__).resolve().parents[2]
    if workdir == repo_root or repo_root in workdir.parents:
        die(f"--workdir {workdir} is inside the source tree; use a scratch directory")
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    (workdir / "tmp").mkdir(exist_ok=True)
    out_json = Path(args.out) if args.out else workdir / "results.json"
    out_md = Path(args.markdown) if args.markdown else workdir / "results.md"

    if args.page_reporting_order is not None:
        set_page_reporting_order(args.page_reporting_order)
    ensure_packages(datasets, [t for t in tools if not s3 or t in S3_TOOLS])
    server = None
    rclone = None
    storage = {"mode": "local"}
    if s3:
        if not shutil.which("rclone") and os.geteuid() == 0:
            log("installing rclone with apt-get (the floor of the copy measurement)")
            try:
                apt_get(["install", "--no-install-recommends", "rclone"])
            except RuntimeError as e:
                log(f"could not install rclone; the copy floor will fail: {e}")
        rclone = shutil.which("rclone")
        server = ensure_s3_server(args.s3_server, workdir, args.s3_server_install_timeout)
        try:
            server.start()
        except RuntimeError as e:
            die(f"S3 server: {e}")
        storage = server.info() | {"mode": "s3"}  # while its data folder exists

    exes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for t in tools:
        if s3 and t not in S3_TOOLS:
            skipped[t] = "no object-storage mode in this benchmark (--storage s3 runs pvsnap, restic and rustic)"
        elif t in ("rsync-full", "rsync-linkdest"):
            exes[t] = shutil.which("rsync")
        elif t in ("restic", "borg"):
            exe = shutil.which(t)
            if exe:
                exes[t] = exe
            else:
                skipped[t] = "binary not found after installation attempt"
        elif t == "rustic":
            exe = ensure_rustic(args.rustic_install_timeout) if explicit_tools else find_exe("rustic")
            if exe:
                exes[t] = exe
            else:
                skipped[t] = ("not installed (request it with --tools ...,rustic to install it via cargo)"
                              if not explicit_tools else "cargo install rustic-rs failed or timed out")
        elif t == "pvsnap":
            p = args.pvsnap or default_pvsnap()
            if os.path.isfile(p) and os.access(p, os.X_OK):
                exes[t] = str(Path(p).resolve())
            else:
                skipped[t] = f"binary {p!r} is not an executable file (build it or pass --pvsnap PATH)"
    for t, why in skipped.items():
        print(f"*** SKIPPING {t}: {why}", flush=True)
    tools = [t for t in tools if t in exes]
    if not tools:
        die("no tool left to benchmark")

    versions = {
        **({"s3 server": server.version(), "rclone": first_line(["rclone", "version"])} if s3 else {}),
        "rsync": first_line(["rsync", "--version"]),
        "tar": first_line(["tar", "--version"]),
        "zstd": first_line(["zstd", "--version"]),
        "python": platform.python_version(),
    }
    if "pg" in datasets:
        versions["postgres"] = first_line([str(pg_bindir() / "postgres"), "--version"])
    notes = {}
    for t in tools:
        if t.startswith("rsync"):
            notes[t] = TOOL_CLASSES[t].note
            continue
        tool = TOOL_CLASSES[t](exes[t], workdir)
        versions[t] = tool.version()
        notes[t] = tool.note
    if "restic" in tools:
        notes["restic"] = "restic init (repository format default of this version), backup --json; " \
                          "compression: repository default (auto for format v2)"
    if "rustic" in tools:
        notes["rustic"] = "rustic init, backup with defaults"
    if "pvsnap" in tools:
        notes["pvsnap"] = "pvsnap init, snapshot --json --quiet, restore latest --target"

    if s3 and "pvsnap" in tools:
        notes["pvsnap copy"] = ("pvsnap --repo LOCAL copy --to s3:... --json into a fresh bucket; checked after: "
                                "both snapshots listed, pvsnap check clean")
        notes["rclone sync"] = ("rclone sync LOCAL/ bench:BUCKET, remote configured by RCLONE_CONFIG_BENCH_* "
                                "(s3, provider Other, path style), rclone's default transfers; checked after: "
                                "the bucket lists every file of the folder with its size")
    log(f"workdir {workdir}; storage {args.storage}; datasets {datasets}; tools {tools}; reps {reps}")
    step_timeout = args.step_timeout or (300.0 if args.smoke else 7200.0)
    timed = Timed(workdir / "tmp", step_timeout)
    check_resolution(timed)
    samples: list[dict] = []
    ds_meta: dict[str, dict] = {}
    failures: list[str] = []
    for ds in datasets:
        try:
            meta = prepare_dataset(ds, workdir, args.smoke, args.seed, args.regen)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            die(f"dataset {ds}: generation failed: {e}")
        ds_meta[ds] = meta
        states = workdir / "states" / f"{ds}-{'smoke' if args.smoke else 'full'}"
        live = workdir / "live" / ds
        for rep in range(reps):
            log(f"dataset {ds}: repetition {rep + 1}/{reps}")
            for s in run_floors(ds, rep, states, live, workdir, timed):
                samples.append(s)
                if not s["ok"]:
                    failures.append(f"{ds} rep {rep}: floor {s['floor']} failed (rc={s['rc']})")
            k = rep % len(tools)
            for t in tools[k:] + tools[:k]:  # rotate the order between repetitions
                bucket = server.new_bucket(f"{ds}-{t}-{rep}") if server else None
                tool = TOOL_CLASSES[t](exes[t], workdir / "runs" / ds / t, bucket)
                for s in run_tool(tool, ds, rep, states, live, workdir, timed, args.seed + rep):
                    samples.append(s)
                    if not s["ok"] and not s.get("not_run"):
                        step = s.get("step") or s.get("what")
                        what = "restore verification FAILED" if s.get("verify") else f"{step} failed (rc={s['rc']})"
                        why = f": {s['reason']}" if s.get("reason") else ""
                        failures.append(f"{ds} rep {rep}: {t} {what}{why}")
                if bucket:
                    bucket.remove()
            if server and "pvsnap" in tools:
                for s in run_copy(ds, rep, states, live, workdir, timed, server, exes["pvsnap"], rclone):
                    samples.append(s)
                    if not s["ok"]:
                        failures.append(f"{ds} rep {rep}: {s['who']} failed: {s.get('reason')}")
        rmtree(live)

    if server:
        server.stop()
        if server.data:
            rmtree(server.data)
    summary = summarize(samples)
    goals = evaluate_goals(summary, datasets, samples, args.storage) if {"pvsnap", "restic"} <= set(tools) else []
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "smoke": args.smoke,
        "restores_into": "fresh ext4 filesystem per restore" if RestoreTarget.fresh else "work folder",
        "restore_warmups": RESTORE_WARMUPS,
        "storage": storage,
        "reps": reps,
        "seed": args.seed,
        "machine": machine_info(workdir),
        "versions": versions,
        "tools": tools,
        "tool_notes": notes,
        "skipped_tools": skipped,
        "datasets": ds_meta,
        "total_seconds": time.monotonic() - t_start,
        "summary": summary,
        "goals": goals,
        "failures": failures,
        "samples": samples,
    }
    md = markdown(report)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=1, default=str))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(md)
    print()
    print(md)
    log(f"wrote {out_json} and {out_md}; total {report['total_seconds']:.0f}s")
    if failures:
        print(f"\n!!! {len(failures)} FAILURE(S):", file=sys.stderr)
        for f in failures:
            print(f"!!!   {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
