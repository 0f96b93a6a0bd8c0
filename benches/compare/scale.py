"""Scale mode of the comparison benchmark (`compare.py --scale`, issue #23).

Builds trees of many small files deterministically (folders of 1,000 files
of 20-400 words each), and for each size runs pvsnap, restic and rustic
(those installed) through: first snapshot, unchanged re-snapshot, restore
into an empty folder. Each step runs under /usr/bin/time (wall time, peak
RSS). Writes a Markdown table and a PNG plot of time and peak RSS against
the file count (matplotlib, else gnuplot). A manual run, not CI.
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
from pathlib import Path

import compare as c

# name -> (folders, files per folder)
SIZES = {"ci": (10, 1000), "100k": (100, 1000), "1m": (1000, 1000), "3m": (3000, 1000)}
STEPS = ["first snapshot", "unchanged re-snapshot", "restore", "find through mount"]
MOUNT_SNAPSHOTS = 3
SCALE_VERSION = 1


def build_tree(root: Path, folders: int, per: int, seed: int) -> None:
    """`folders` x `per` files of 20-400 words; the same bytes for a seed."""
    stamp = root / ".complete"
    want = f"v{SCALE_VERSION} {folders}x{per} seed {seed}"
    if stamp.exists() and stamp.read_text() == want:
        return
    c.rmtree(root)
    root.mkdir(parents=True)
    tg = c.TextGen(seed)
    words = tg.words
    for d in range(folders):
        rng = random.Random(f"{seed}/{d}")
        dpath = root / f"d{d:04d}"
        dpath.mkdir()
        for f in range(per):
            n = rng.randint(20, 400)
            body = " ".join(rng.choices(words, k=n)) + "\n"
            p = dpath / f"f{f:04d}.txt"
            p.write_text(body)
            c.set_mtime(p, c.BASE_MTIME + d * per + f)
        if d % 100 == 99:
            c.log(f"  tree {root.name}: {d + 1}/{folders} folders")
    stamp.write_text(want)


def fresh_ext4(image: Path, mnt: Path, files: int) -> None:
    """A new ext4 (with a journal) on a sparse file, mounted at `target`: a
    restore's timing must not depend on what the machine's own filesystem
    deleted just before (an ext4 without a journal skips inodes freed in the
    last 30 s one by one, which made restores right after the previous
    run's cleanup up to 10x slower). The restore goes into a folder of it:
    the filesystem's root is not empty (lost+found)."""
    size = files * 8192 + (1 << 30)
    with open(image, "wb") as f:
        f.truncate(size)
    c.run(["mkfs.ext4", "-q", "-F", "-N", str(files + files // 5 + 10000), "-E",
           "lazy_itable_init=1,lazy_journal_init=1,nodiscard", str(image)])
    mnt.mkdir()
    c.run(["mount", "-o", "loop", str(image), str(mnt)])


def drop_target(target: Path, fresh_fs: bool) -> None:
    """Unmounts the fresh filesystem `target` is in, or removes `target`."""
    if fresh_fs and os.path.ismount(target.parent):
        c.run(["umount", str(target.parent)])
        c.rmtree(target.parent)
    else:
        c.rmtree(target)


def run_size(name: str, tree: Path, tools: dict[str, str], work: Path, timed: c.Timed, reps: int,
             fresh_fs: bool = True) -> list[dict]:
    folders, per = SIZES[name]
    rows = []
    for tool_name, exe in tools.items():
        for rep in range(reps):
            rundir = work / "runs" / f"{name}-{tool_name}"
            c.rmtree(rundir)
            (rundir / "aux").mkdir(parents=True)
            tool = c.TOOL_CLASSES[tool_name](exe, rundir)
            env = tool.env()
            if (cmd := tool.init_cmd()) is not None:
                c.run(cmd, env=c.with_env(**env))
            target = rundir / "restored"
            cmds = [tool.snapshot_cmd(tree, 1), tool.snapshot_cmd(tree, 2), None]
            for step, cmd in zip(STEPS, cmds):
                if cmd is None:
                    if fresh_fs:
                        fresh_ext4(rundir / "restore.img", rundir / "fs", folders * per)
                        target = rundir / "fs" / "restored"
                    target.mkdir()
                    cmd = tool.restore_cmd(target, 2)
                c.sync()
                r = timed(cmd, env=env, cwd=tool.restore_cwd(target) if step == "restore" else None)
                ok = r["rc"] == 0
                if ok and step == "restore":
                    # every file back (restic and rustic restore below the source's full path)
                    got = sum(len([f for f in fs if f != ".complete"]) for _, _, fs in os.walk(target))
                    if got != folders * per:
                        ok = False
                        r["stderr_tail"] = f"restored {got} files of {folders * per}"
                rows.append({"size": name, "files": folders * per, "tool": tool_name, "step": step, "rep": rep,
                             "ok": ok, "wall_s": r["wall_s"], "maxrss_kib": r["maxrss_kib"],
                             "stderr": "" if ok else r["stderr_tail"][-400:]})
                c.log(f"  {name} {tool_name} {step}: {r['wall_s']:.2f} s, {r['maxrss_kib'] / 1024:.0f} MiB"
                      + ("" if ok else f" FAILED rc {r['rc']}: {r['stderr_tail'][-300:]}"))
                if not ok:
                    break
            else:
                if tool_name == "pvsnap":
                    drop_target(target, fresh_fs)
                    rows.append(mount_find(name, folders * per, tree, exe, rundir, env, rep))
            drop_target(target, fresh_fs)
            c.rmtree(rundir)
    return rows


def rss_of(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in KiB, from /proc."""
    hwm = rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return hwm, rss


def mount_find(name: str, files: int, tree: Path, exe: str, rundir: Path, env: dict, rep: int) -> dict:
    """`find` over MOUNT_SNAPSHOTS snapshots of the tree through `pvsnap mount`:
    wall time of the find, peak RSS of the mount process (VmHWM), and its
    RSS once the find is done (`after_mib`)."""
    import time
    repo = rundir / "repo"
    while len(json.loads(subprocess.run([exe, "--repo", str(repo), "snapshots", "--json"], capture_output=True,
                                        text=True, check=True, env=c.with_env(**env)).stdout)) < MOUNT_SNAPSHOTS:
        c.run([exe, "--repo", str(repo), "snapshot", str(tree), "--quiet"], env=c.with_env(**env))
    mnt = rundir / "mnt"
    mnt.mkdir()
    log = open(rundir / "mount.log", "wb")
    p = subprocess.Popen([exe, "--repo", str(repo), "mount", str(mnt)], env=c.with_env(**env),
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    row = {"size": name, "files": files, "tool": "pvsnap", "step": "find through mount", "rep": rep,
           "ok": False, "wall_s": 0.0, "maxrss_kib": 0, "after_kib": 0, "stderr": ""}
    try:
        deadline = time.time() + 60
        while not os.path.ismount(mnt):
            if p.poll() is not None or time.time() > deadline:
                row["stderr"] = "the mount did not come up: " + (rundir / "mount.log").read_text()[-300:]
                return row
            time.sleep(0.05)
        c.sync()
        t0 = time.perf_counter()
        out = subprocess.run(["find", str(mnt / "snapshots"), "-type", "f", "!", "-name", ".complete"], capture_output=True, check=True).stdout
        row["wall_s"] = time.perf_counter() - t0
        got = out.count(b"\n")
        hwm, rss = rss_of(p.pid)
        row["maxrss_kib"], row["after_kib"] = hwm, rss
        row["ok"] = got == files * MOUNT_SNAPSHOTS
        if not row["ok"]:
            row["stderr"] = f"found {got} files of {files * MOUNT_SNAPSHOTS}"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
    c.log(f"  {name} pvsnap find through mount ({MOUNT_SNAPSHOTS} snapshots): {row['wall_s']:.2f} s, "
          f"peak {row['maxrss_kib'] / 1024:.0f} MiB, {row['after_kib'] / 1024:.0f} MiB after"
          + ("" if row["ok"] else f" FAILED: {row['stderr']}"))
    return row


def medians(rows: list[dict]) -> list[dict]:
    out = {}
    for r in rows:
        if r["ok"]:
            out.setdefault((r["files"], r["tool"], r["step"]), []).append(r)
    return [{"files": k[0], "tool": k[1], "step": k[2],
             "wall_s": statistics.median(x["wall_s"] for x in v),
             "maxrss_mib": statistics.median(x["maxrss_kib"] for x in v) / 1024, "n": len(v),
             **({"after_mib": statistics.median(x["after_kib"] for x in v) / 1024} if "after_kib" in v[0] else {})}
            for k, v in sorted(out.items())]


def table(meds: list[dict]) -> str:
    lines = ["| files | step | " + " | ".join(sorted({m["tool"] for m in meds})) + " |"]
    tools = sorted({m["tool"] for m in meds})
    lines.append("|---|---|" + "---|" * len(tools))
    by = {(m["files"], m["step"], m["tool"]): m for m in meds}
    for files in sorted({m["files"] for m in meds}):
        for step in STEPS:
            cells = []
            for t in tools:
                m = by.get((files, step, t))
                cell = f"{m['wall_s']:.2f} s, {m['maxrss_mib']:.0f} MiB" if m else "—"
                if m and "after_mib" in m:
                    cell += f" ({m['after_mib']:.0f} MiB after)"
                cells.append(cell)
            lines.append(f"| {files:,} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(meds: list[dict], png: Path) -> str:
    """Time and peak RSS against file count, one line per tool and step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    series = {}
    for m in meds:
        series.setdefault((m["tool"], m["step"]), []).append(m)
    if plt is not None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
        for (tool, step), ms in sorted(series.items()):
            xs = [m["files"] for m in ms]
            ax1.plot(xs, [m["wall_s"] for m in ms], marker="o", label=f"{tool} {step}")
            ax2.plot(xs, [m["maxrss_mib"] for m in ms], marker="o", label=f"{tool} {step}")
        for ax, what in ((ax1, "wall time (s)"), (ax2, "peak RSS (MiB)")):
            ax.set_xscale("log")
            ax.set_xlabel("files")
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
        ax2.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        return "matplotlib"
    if shutil.which("gnuplot"):
        data = png.with_suffix(".dat")
        blocks, names = [], []
        for (tool, step), ms in sorted(series.items()):
            names.append(f"{tool} {step}")
            blocks.append("\n".join(f"{m['files']} {m['wall_s']} {m['maxrss_mib']}" for m in ms))
        data.write_text("\n\n\n".join(blocks) + "\n")
        plots = lambda col: ", ".join(  # noqa: E731
            f"'{data}' index {i} using 1:{col} with linespoints title '{n}'" for i, n in enumerate(names))
        script = (f"set terminal png size 1200,500; set output '{png}'; set multiplot layout 1,2;"
                  f"set logscale x; set xlabel 'files'; set ylabel 'wall time (s)'; plot {plots(2)};"
                  f"set ylabel 'peak RSS (MiB)'; plot {plots(3)}; unset multiplot")
        subprocess.run(["gnuplot", "-e", script], check=True)
        return "gnuplot"
    print("WARNING: no plot: neither matplotlib (pip install matplotlib) nor gnuplot (apt-get install gnuplot) "
          "is installed; the table is written", file=sys.stderr)
    return "none"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="compare.py --scale", description=__doc__)
    ap.add_argument("--scale", nargs="?", const="ci,100k,1m", default="ci,100k,1m",
                    help=f"comma-separated sizes among {', '.join(SIZES)} (folders of 1,000 files)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians are reported)")
    ap.add_argument("--tools", default="pvsnap,restic,rustic", help="those not installed are left out, named")
    ap.add_argument("--pvsnap", default=None, help="pvsnap binary (default: <repo>/target/release/pvsnap or PATH)")
    ap.add_argument("--workdir", default="/work/benchdata-scale", help="scratch folder (trees, repositories)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--step-timeout", type=float, default=7200)
    ap.add_argument("--restore-in-place", action="store_true",
                    help="restore into a folder of WORKDIR instead of a fresh ext4 on a loop device per restore")
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.scale.split(",") if s.strip()]
    if bad := [s for s in sizes if s not in SIZES]:
        c.die(f"unknown --scale size {', '.join(bad)}: choose among {', '.join(SIZES)}")
    work = Path(args.workdir).resolve()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    tools = {}
    for t in [x.strip() for x in args.tools.split(",") if x.strip()]:
        exe = (args.pvsnap or c.default_pvsnap()) if t == "pvsnap" else c.find_exe(t)
        if exe and shutil.which(exe):
            tools[t] = exe
        else:
            print(f"WARNING: {t} is not installed: left out of the scale run", file=sys.stderr)
    if "pvsnap" not in tools:
        c.die("pvsnap not found: build it (cargo build --release) or pass --pvsnap")
    timed = c.Timed(work / "tmp", args.step_timeout)
    rows = []
    for s in sizes:
        folders, per = SIZES[s]
        tree = work / "trees" / s
        c.log(f"tree {s}: {folders} x {per} files")
        build_tree(tree, folders, per, args.seed)
        rows += run_size(s, tree, tools, work, timed, args.reps, fresh_fs=not args.restore_in_place)
    meds = medians(rows)
    (work / "scale.json").write_text(json.dumps({"rows": rows, "medians": meds}, indent=1))
    md = table(meds)
    (work / "scale.md").write_text(md)
    how = plot(meds, work / "scale.png")
    print(md)
    c.log(f"table {work / 'scale.md'}, raw {work / 'scale.json'}, plot {work / 'scale.png'} ({how})")
    return 0 if all(r["ok"] for r in rows) else 1
