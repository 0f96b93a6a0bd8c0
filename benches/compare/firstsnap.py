"""First-snapshot memory against the number of new files (issue #23).

    python3 benches/compare/firstsnap.py run [--folders 100,1000,3000,10000] [--reps 3] BINARY=LABEL...
    python3 benches/compare/firstsnap.py plot RESULTS.txt [--out PREFIX]

`run` builds (once) a tree of 10,000 folders x 1,000 files of one short line
each (40-100 bytes, every file's content its own blob) on an ext4 image with
`inline_data` (the files live in their inodes, so ten million of them take
about 3 GB), loop-mounted under --workdir (root needed). For each count of
folders, each repetition and each BINARY it moves exactly the first N
folders into the snapshotted folder, makes a new repository on the
machine's disk and times `BINARY snapshot` under /usr/bin/time (wall time,
peak RSS), appending a line per run to WORKDIR/results.txt:

    LABEL folders=N files=F blobs=B wall_s,peak_kib=SECONDS KIB load=LOAD

`plot` turns such lines into a Markdown table of medians and a PNG of peak
RSS and time against the file count, one line per label.

A manual run, not CI; delete --workdir afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

FOLDERS, PER = 10_000, 1_000
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def mount_image(work: Path) -> Path:
    img, mnt = work / "tiny.img", work / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(mnt):
        if not img.exists():
            sh("truncate", "-s", "30G", str(img))
            sh("mkfs.ext4", "-q", "-F", "-O", "inline_data", "-I", "256", "-N", str(FOLDERS * PER + 600_000), str(img))
        sh("mount", "-o", "loop,noatime", str(img), str(mnt))
    return mnt


def build(mnt: Path) -> None:
    """Folders d00000..d09999 under mnt/tree or mnt/parked; resumable."""
    (mnt / "tree").mkdir(exist_ok=True)
    (mnt / "parked").mkdir(exist_ok=True)
    for d in range(FOLDERS):
        name = f"d{d:05d}"
        if (mnt / "tree" / name / "f0999").exists() or (mnt / "parked" / name / "f0999").exists():
            continue
        dp = mnt / "parked" / name
        dp.mkdir(exist_ok=True)
        rng = random.Random(d)
        for f in range(PER):
            body = f"{d}/{f} " + " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) + "\n"
            (dp / f"f{f:04d}").write_text(body)
        if d % 500 == 499:
            print(f"tree: {d + 1}/{FOLDERS} folders", file=sys.stderr, flush=True)


def select(mnt: Path, n: int) -> None:
    """Exactly folders d00000..d(n-1) in mnt/tree."""
    for d in range(FOLDERS):
        name = f"d{d:05d}"
        src, dst = (mnt / "parked" / name, mnt / "tree" / name) if d < n else (mnt / "tree" / name, mnt / "parked" / name)
        if src.exists():
            src.rename(dst)
    got = len(os.listdir(mnt / "tree"))
    if got != n:
        sys.exit(f"tree has {got} folders, not {n}")


def run_one(work: Path, mnt: Path, binary: str, label: str, n: int) -> str:
    repo = work / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run([binary, "-q", "--repo", str(repo), "init"], check=True, capture_output=True)
    os.sync()
    load = open("/proc/loadavg").read().split()[0]
    t = work / "time.txt"
    p = subprocess.run(["/usr/bin/time", "-o", str(t), "-f", "%e %M", binary, "--repo", str(repo),
                        "snapshot", str(mnt / "tree"), "--json", "--quiet"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{label}: snapshot failed: {p.stderr[-500:]}")
    blobs = json.loads(p.stdout)[0]["summary"]["data_blobs_added"]
    wall, kib = t.read_text().split()[-2:]
    return f"{label} folders={n} files={n * PER} blobs={blobs} wall_s,peak_kib={wall} {kib} load={load}"


LINE = re.compile(r"^(\S+) folders=(\d+) files=(\d+) blobs=(\d+) wall_s,peak_kib=([\d.]+) (\d+)")


def plot(results: Path, out: Path) -> None:
    runs: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for line in results.read_text().splitlines():
        if m := LINE.match(line):
            runs.setdefault((m[1], int(m[3])), []).append((float(m[5]), int(m[6])))
    meds = [{"label": k[0], "files": k[1], "reps": len(v),
             "wall_s": statistics.median(w for w, _ in v),
             "peak_mib": round(statistics.median(r for _, r in v) / 1024, 1)} for k, v in sorted(runs.items())]
    out.with_suffix(".json").write_text(json.dumps(meds, indent=1))
    print("| label | files | runs | wall (median) | peak RSS (median) |\n|---|---|---|---|---|")
    for m in meds:
        print(f"| {m['label']} | {m['files']:,} | {m['reps']} | {m['wall_s']:.2f} s | {m['peak_mib']:.0f} MiB |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for label in sorted({m["label"] for m in meds}):
        pts = [m for m in meds if m["label"] == label]
        a.plot([m["files"] for m in pts], [m["peak_mib"] for m in pts], marker="o", label=label)
        b.plot([m["files"] for m in pts], [m["wall_s"] for m in pts], marker="o", label=label)
    for ax, what in ((a, "peak RSS (MiB)"), (b, "wall time (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("new files (one blob each)")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend()
    a.axhline(256, color="grey", linestyle="--", linewidth=1)
    fig.suptitle("pvsnap first snapshot of tiny files")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("binaries", nargs="+", help="BINARY=LABEL")
    r.add_argument("--folders", default="100,1000,3000,10000")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--workdir", default="/work/benchdata/firstsnap")
    p = sub.add_parser("plot")
    p.add_argument("results")
    p.add_argument("--out", default="benches/compare/results/first-snapshot-10m")
    a = ap.parse_args()
    if a.mode == "plot":
        plot(Path(a.results), Path(a.out))
        return
    work = Path(a.workdir)
    mnt = mount_image(work)
    build(mnt)
    for rep in range(a.reps):
        for n in [int(x) for x in a.folders.split(",")]:
            select(mnt, n)
            for b in a.binaries:
                binary, label = b.split("=", 1)
                line = run_one(work, mnt, binary, label, n)
                print(line, flush=True)
                with open(work / "results.txt", "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
