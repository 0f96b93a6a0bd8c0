"""Many snapshots and many chunks (issue #23): builds the repositories with
the real `pvsnap` binary and times the commands that must stay fast.

    python3 benches/compare/many.py snapshots [--count 10000]
    python3 benches/compare/many.py chunks [--gib 10] [--tools pvsnap,restic,rustic]

`snapshots`: a repository of COUNT snapshots of four small folders (300
files each, a few changed before every run), taken by `pvsnap snapshot` in a
loop (four sources a run, hosts and tags in turn, one hour apart with
`--time`), then `snapshots`, `snapshots --json`, `snapshots --group-by
host`, `forget --policy default --dry-run`, `stats`, `stats --json` and a
listing of the mount's folders, each timed REPS times (medians).

`chunks`: a small-chunk repository (`init --chunker 1,1,1`: every chunk is
1 KiB) filled with GIB GiB of generated data in 1 GiB batches, one snapshot
each; every 1 KiB block starts with its own counter, so each is a new chunk
(about a million chunks per GiB). The same batches go to restic and rustic
(their chunks are about 1 MiB, so their repositories hold a thousandth of
the chunks). Then times opening the repository (`stats`, `snapshots`),
`check`, `forget` of half the snapshots with prune, and `check
--read-data-subset 1%`, with peak RSS (/usr/bin/time), REPS times where a
step does not change the repository.

Standard library only; a manual run, not CI. Data lives under --workdir
(default /work/benchdata/many): delete it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["node-a", "node-b", "node-c"]
TAGS = [["daily"], ["hourly"], ["daily", "db"]]
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()
PASSWORD = "many-bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(cmd: list[str], env: dict | None = None, shell_out: bool = False) -> dict:
    """Runs cmd under /usr/bin/time; wall seconds, peak RSS in KiB, rc, stdout."""
    fmt = "%e %M"
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", fmt, "-o", "/dev/stderr", *cmd], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "0 0"
    try:
        _, rss = last.split()
        rss_kib = int(rss)
    except ValueError:
        rss_kib = 0
    if p.returncode != 0:
        log(f"  FAILED rc {p.returncode}: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return {"wall_s": wall, "maxrss_kib": rss_kib, "rc": p.returncode, "stdout": p.stdout if shell_out else ""}


def median_of(cmd: list[str], reps: int, env: dict | None = None, name: str | None = None) -> dict:
    runs = [timed(cmd, env) for _ in range(reps)]
    out = {"step": name or " ".join(cmd[1:]), "walls": [round(r["wall_s"], 3) for r in runs],
           "wall_s": statistics.median(r["wall_s"] for r in runs),
           "maxrss_mib": statistics.median(r["maxrss_kib"] for r in runs) / 1024,
           "ok": all(r["rc"] == 0 for r in runs)}
    log(f"  {out['step']}: median {out['wall_s']:.3f} s {out['walls']}, {out['maxrss_mib']:.0f} MiB"
        + ("" if out["ok"] else " FAILED"))
    return out


# ---------------------------------------------------------------- snapshots

def write_file(p: Path, rng: random.Random) -> None:
    p.write_text(" ".join(rng.choices(WORDS, k=rng.randint(20, 400))) + "\n")


def build_sources(base: Path, n_sources: int, files: int) -> list[Path]:
    srcs = []
    for s in range(n_sources):
        d = base / f"vol{s}"
        srcs.append(d)
        if d.exists():
            continue
        rng = random.Random(f"src/{s}")
        for f in range(files):
            sub = d / f"dir{f % 10}"
            sub.mkdir(parents=True, exist_ok=True)
            write_file(sub / f"file{f:04d}.txt", rng)
    return srcs


def many_snapshots(a) -> list[dict]:
    work = Path(a.workdir) / "snaps"
    repo = work / "repo"
    env = dict(os.environ, PVSNAP_REPO=str(repo))
    env.pop("PVSNAP_PASSWORD", None)
    pv = a.pvsnap
    srcs = build_sources(work / "src", a.sources, a.files)
    stamp = work / "done"
    if not (stamp.exists() and stamp.read_text() == str(a.count)):
        # A loop stopped partway resumes where it stopped (the changes are
        # the same for each run number).
        first = len(os.listdir(repo / "snapshots")) // len(srcs) if (repo / "config").exists() else 0
        if first == 0:
            shutil.rmtree(repo, ignore_errors=True)
            subprocess.run([pv, "-q", "init"], env=env, check=True)
        runs = a.count // len(srcs)
        t0 = time.monotonic()
        start = 1767225600  # 2026-01-01T00:00:00Z
        for i in range(first, runs):
            rng = random.Random(f"run/{i}")
            for s in srcs:  # a few files change between snapshots
                for _ in range(3):
                    f = rng.randrange(a.files)
                    write_file(s / f"dir{f % 10}" / f"file{f:04d}.txt", rng)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + i * 3600))
            cmd = [pv, "-q", "snapshot", "--time", when, "--host", HOSTS[i % len(HOSTS)]]
            for t in TAGS[i % len(TAGS)]:
                cmd += ["--tag", t]
            subprocess.run(cmd + [str(s) for s in srcs], env=env, check=True, stdout=subprocess.DEVNULL)
            if i % 100 == 99:
                el = time.monotonic() - t0
                log(f"  {(i + 1) * len(srcs)} snapshots in {el:.0f} s ({el / (i + 1 - first) * 1000:.0f} ms a run)")
        took = time.monotonic() - t0
        stamp.write_text(str(a.count))
        (work / "build-seconds").write_text(f"{took:.0f}")
    log(f"repository of {a.count} snapshots built in {(work / 'build-seconds').read_text()} s")
    results = []
    for name, args in [
        ("snapshots", ["snapshots"]),
        ("snapshots --json", ["snapshots", "--json"]),
        ("snapshots --group-by host", ["snapshots", "--group-by", "host"]),
        ("forget --policy default --dry-run", ["forget", "--policy", "default", "--dry-run"]),
        ("stats", ["stats"]),
        ("stats --json", ["stats", "--json"]),
    ]:
        results.append(median_of([pv, *args], a.reps, env, name))
    results += mount_listing(pv, env, work, srcs, a.reps)
    return results


def mount_listing(pv: str, env: dict, work: Path, srcs: list[Path], reps: int) -> list[dict]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    out = []
    for rep in range(reps):
        p = subprocess.Popen([pv, "-q", "mount", str(mnt)], env=env, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while not (mnt / "snapshots").exists():
            if p.poll() is not None:
                log(f"mount failed: {p.stderr.read().decode()[-1000:]}")
                return out
            time.sleep(0.01)
        ready = time.monotonic() - t0
        steps = [("mount until snapshots/ appears", None, ready)]
        src_dir = "_" + str(srcs[0]).strip("/").replace("_", "%5F").replace("/", "_")
        for name, path in [("ls snapshots/", mnt / "snapshots"), ("ls sources/", mnt / "sources"),
                           ("ls sources/<one source>/", mnt / "sources" / src_dir),
                           ("ls ids/", mnt / "ids")]:
            t = time.monotonic()
            n = len(os.listdir(path))
            steps.append((name, n, time.monotonic() - t))
        subprocess.run(["fusermount", "-u", str(mnt)], check=False)
        p.wait(timeout=30)
        for name, n, s in steps:
            out.append({"step": name, "rep": rep, "entries": n, "wall_s": s})
    meds = []
    for name in dict.fromkeys(r["step"] for r in out):
        rs = [r for r in out if r["step"] == name]
        m = {"step": name, "walls": [round(r["wall_s"], 3) for r in rs],
             "wall_s": statistics.median(r["wall_s"] for r in rs), "entries": rs[0]["entries"], "ok": True}
        log(f"  {name}: median {m['wall_s']:.3f} s {m['walls']} ({m['entries']} entries)")
        meds.append(m)
    return meds


# ---------------------------------------------------------------- chunks

BLOCK = 1024


def write_batch(path: Path, batch: int, gib: float) -> None:
    """1 GiB (or `gib`) of 64 files; every 1 KiB block starts with a unique
    counter, then 16 bytes of noise and 992 bytes of a repeated phrase, so
    it is a chunk of its own at 1 KiB chunks and compresses about 10x (the
    disk holds ten million of them)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rng = random.Random(f"batch/{batch}")
    text = (" ".join(rng.choices(WORDS, k=8)) + " ").encode() * 200
    files = 64
    blocks_per_file = int(gib * (1 << 30)) // BLOCK // files
    n = batch * files * blocks_per_file
    for f in range(files):
        with open(path / f"data{f:02d}.bin", "wb") as out:
            left = blocks_per_file
            while left:
                k = min(left, 1024)
                noise = rng.randbytes(16 * k)
                parts = []
                for j in range(k):
                    off = (n * 7) % 64
                    parts.append(b"%015d\n" % n + noise[j * 16:(j + 1) * 16] + text[off:off + 992])
                    n += 1
                out.write(b"".join(parts))
                left -= k


class ChunkTool:
    def __init__(self, name: str, exe: str, repo: Path):
        self.name, self.exe, self.repo = name, exe, repo
        self.env = dict(os.environ)
        if name == "pvsnap":
            self.env["PVSNAP_REPO"] = str(repo)
        else:
            self.env["RESTIC_REPOSITORY"] = str(repo)
            self.env["RESTIC_PASSWORD"] = PASSWORD
            self.env["RUSTIC_REPOSITORY"] = str(repo)
            self.env["RUSTIC_PASSWORD"] = PASSWORD

    def cmd(self, *args: str) -> list[str]:
        return [self.exe, *args]

    def init(self) -> list[str]:
        if self.name == "pvsnap":
            return self.cmd("-q", "init", "--chunker", "1,1,1")
        return self.cmd("init")

    def snapshot(self, src: Path, tag: str) -> list[str]:
        if self.name == "pvsnap":
            return self.cmd("-q", "snapshot", "--tag", tag, str(src))
        return self.cmd("backup", "--tag", tag, str(src)) if self.name == "restic" else \
            self.cmd("backup", "--tag", tag, str(src))

    def ids_tagged(self, tags: list[str]) -> list[str]:
        out = subprocess.run(self.cmd("snapshots", "--json"), env=self.env, check=True,
                             capture_output=True, text=True).stdout
        snaps = json.loads(out)
        if self.name == "rustic":  # groups of snapshots
            snaps = [s for g in snaps for s in (g[1] if isinstance(g, list) else g.get("snapshots", []))]
        return [s["id"] for s in snaps if set(s.get("tags") or []) & set(tags)]

    def forget(self, ids: list[str]) -> list[str]:
        return self.cmd("forget", *ids)

    def prune(self) -> list[str]:
        if self.name == "pvsnap":
            return self.cmd("-q", "prune", "--keep-deleted", "0", "--grace", "0s")
        if self.name == "rustic":
            return self.cmd("prune", "--instant-delete")
        return self.cmd("prune")


def du(p: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(p)], capture_output=True, text=True).stdout.split()[0])


def many_chunks(a) -> list[dict]:
    work = Path(a.workdir) / "chunks"
    work.mkdir(parents=True, exist_ok=True)
    exes = {"pvsnap": a.pvsnap, "restic": shutil.which("restic"), "rustic": shutil.which("rustic")}
    tools = [ChunkTool(t, exes[t], work / f"repo-{t}") for t in a.tools.split(",") if exes.get(t)]
    batches = int(a.gib)
    results = []
    stamp = work / "done"
    if not (stamp.exists() and stamp.read_text() == f"{batches} {a.tools}"):
        for t in tools:
            shutil.rmtree(t.repo, ignore_errors=True)
            subprocess.run(t.init(), env=t.env, check=True, capture_output=True)
        src = Path(a.srcdir)
        for b in range(batches):
            t0 = time.monotonic()
            write_batch(src, b, 1)
            log(f"batch {b}: generated in {time.monotonic() - t0:.1f} s")
            for t in tools:
                r = timed(t.snapshot(src, f"b{b}"), t.env)
                results.append({"tool": t.name, "step": f"snapshot of batch {b}", "wall_s": r["wall_s"],
                                "maxrss_mib": r["maxrss_kib"] / 1024, "ok": r["rc"] == 0})
                log(f"  {t.name} snapshot {b}: {r['wall_s']:.1f} s, {r['maxrss_kib'] / 1024:.0f} MiB")
        shutil.rmtree(src, ignore_errors=True)
        stamp.write_text(f"{batches} {a.tools}")
    for t in tools:
        log(f"{t.name}: repository {du(t.repo) / 2**30:.2f} GiB")
        steps = []
        if t.name == "pvsnap":
            steps = [("stats (opens, loads the index)", t.cmd("stats")),
                     ("snapshots", t.cmd("snapshots")),
                     ("check", t.cmd("check"))]
        else:
            steps = [("snapshots", t.cmd("snapshots")), ("check", t.cmd("check"))]
        for name, cmd in steps:
            m = median_of(cmd, a.reps, t.env, f"{t.name} {name}")
            m["tool"] = t.name
            results.append(m)
    if a.prune:
        half = [f"b{b}" for b in range(0, batches, 2)]
        for t in tools:
            ids = t.ids_tagged(half)
            log(f"  {t.name}: forgetting {len(ids)} snapshots")
            subprocess.run(t.forget(ids), env=t.env, check=True, capture_output=True)
            r = timed(t.prune(), t.env)
            results.append({"tool": t.name, "step": "prune (half the data garbage)", "wall_s": r["wall_s"],
                            "maxrss_mib": r["maxrss_kib"] / 1024, "ok": r["rc"] == 0})
            log(f"  {t.name} prune: {r['wall_s']:.1f} s, {r['maxrss_kib'] / 1024:.0f} MiB, "
                f"repository now {du(t.repo) / 2**30:.2f} GiB")
        for t in tools:
            sub = ["--read-data", "--read-data-subset", "1%"] if t.name == "rustic" else ["--read-data-subset", "1%"]
            m = median_of(t.cmd("check", *sub), a.reps, t.env,
                          f"{t.name} check --read-data-subset 1%")
            m["tool"] = t.name
            results.append(m)
            m = median_of(t.cmd("stats") if t.name == "pvsnap" else t.cmd("snapshots"), a.reps, t.env,
                          f"{t.name} open after prune")
            m["tool"] = t.name
            results.append(m)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["snapshots", "chunks"])
    ap.add_argument("--pvsnap", default=str(ROOT / "target/release/pvsnap"))
    ap.add_argument("--workdir", default="/work/benchdata/many")
    ap.add_argument("--srcdir", default="/dev/shm/pvsnap-many-src", help="chunks: where each batch is generated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--count", type=int, default=10000, help="snapshots: how many")
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--gib", type=float, default=10, help="chunks: GiB of data, about a million chunks each")
    ap.add_argument("--tools", default="pvsnap,restic,rustic")
    ap.add_argument("--no-prune", dest="prune", action="store_false")
    ap.add_argument("--out", help="JSON results file (default WORKDIR/MODE.json)")
    a = ap.parse_args()
    res = many_snapshots(a) if a.mode == "snapshots" else many_chunks(a)
    out = Path(a.out or Path(a.workdir) / f"{a.mode}.json")
    out.write_text(json.dumps(res, indent=1))
    for r in res:
        print(f"| {r['step']} | {r['wall_s']:.3f} s | {r.get('maxrss_mib', 0):.0f} MiB |")


if __name__ == "__main__":
    main()
