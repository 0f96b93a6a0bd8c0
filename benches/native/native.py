#!/usr/bin/env python3
"""Native snapshots, measured (issue: native snapshots as a frozen source).

As root, on loop devices in a scratch folder:
- creation time of a native snapshot on volumes of 1 and 10 GiB (btrfs,
  and ZFS through zfs-fuse when installed): it must not grow with size;
- a frozen-source snapshot (`--source-snapshot required`) against a live
  one (`--source-snapshot off`) of the same volume, each into a fresh
  repository, alternating: goal <= 1.1x the live read;
- the freeze window with `--freeze postgres` on a PostgreSQL cluster whose
  data folder is on the btrfs volume, under pgbench (goal <= 1 s), when
  PostgreSQL is installed;
- the same with `--freeze mysql` on a MariaDB server under two writers
  (`mysql` part), when mariadb-server is installed.

Standard library only. Prints a Markdown report; `--out` writes the raw
samples as JSON. Not part of CI: it needs minutes and 12+ GiB of disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 1 << 30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-800:]}")
    return r


def timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    r = run(cmd, **kw)
    return time.monotonic() - start, r


def fill(folder: Path, size: int, seed: int) -> None:
    """`size` bytes in files of 64 MiB: half incompressible, half text, so
    a snapshot reads and compresses real work."""
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 64 << 20
    text = (b"a row of some table, with a number and some words %d\n" % seed) * (chunk // 56 + 1)
    with open("/dev/urandom", "rb") as rnd:
        for i in range(size // chunk):
            data = rnd.read(chunk) if i % 2 else text[:chunk]
            (folder / f"part-{i:04}").write_bytes(data)
    run(["sync"])


class Btrfs:
    kind = "btrfs"

    def __init__(self, scratch: Path, size: int, name: str):
        self.image = scratch / f"{name}.img"
        self.mnt = scratch / f"{name}-mnt"
        with open(self.image, "wb") as f:
            f.truncate(size + 3 * GiB)
        run(["mkfs.btrfs", "-q", str(self.image)])
        self.mnt.mkdir(parents=True, exist_ok=True)
        run(["mount", "-o", "loop", str(self.image), str(self.mnt)])
        run(["btrfs", "subvolume", "create", str(self.mnt / "vol")])
        self.volume = self.mnt / "vol"

    def native_snapshot(self, name: str) -> float:
        d, _ = timed(["btrfs", "subvolume", "snapshot", "-r", str(self.volume), str(self.mnt / name)])
        run(["btrfs", "subvolume", "delete", str(self.mnt / name)])
        return d

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        self.image.unlink(missing_ok=True)


class Zfs:
    kind = "zfs"

    def __init__(self, scratch: Path, size: int, name: str):
        self.pool = f"pvsnapbench{name}"
        self.image = scratch / f"{name}.zpool"
        self.mnt = scratch / f"{name}-zmnt"
        with open(self.image, "wb") as f:
            f.truncate(size + 3 * GiB)
        if subprocess.run(["pgrep", "-x", "zfs-fuse"], capture_output=True).returncode != 0:
            run(["zfs-fuse"])
            time.sleep(1)
        run(["zpool", "create", "-m", str(self.mnt), self.pool, str(self.image)])
        run(["zfs", "create", f"{self.pool}/vol"])
        self.volume = self.mnt / "vol"

    def native_snapshot(self, name: str) -> float:
        d, _ = timed(["zfs", "snapshot", f"{self.pool}/vol@{name}"])
        run(["zfs", "destroy", f"{self.pool}/vol@{name}"])
        return d

    def close(self) -> None:
        subprocess.run(["zpool", "destroy", "-f", self.pool], capture_output=True)
        self.image.unlink(missing_ok=True)


def pvsnap_snapshot(pvsnap: str, repo: Path, src: Path, mode: str, extra: list[str]) -> tuple[float, dict]:
    shutil.rmtree(repo, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVSNAP_")}
    run([pvsnap, "--repo", str(repo), "init", "-q"], env=env)
    run(["sync"])
    d, r = timed([pvsnap, "--repo", str(repo), "snapshot", str(src), "--source-snapshot", mode, "--json", "-q",
                  *extra], env=env)
    snaps = json.loads(r.stdout)
    return d, (snaps[0] if isinstance(snaps, list) else snaps)


def creation(kinds: list, scratch: Path, sizes: list[int], reps: int, samples: list) -> None:
    for cls in kinds:
        for size in sizes:
            log(f"{cls.kind}: a {size // GiB} GiB volume")
            vol = cls(scratch, size, f"c{size // GiB}")
            try:
                fill(vol.volume, size, 1)
                for rep in range(reps):
                    samples.append({"what": "create", "kind": cls.kind, "size_gib": size // GiB, "rep": rep,
                                    "seconds": vol.native_snapshot(f"bench-{rep}")})
            finally:
                vol.close()


def frozen_vs_live(pvsnap: str, scratch: Path, size: int, reps: int, samples: list) -> None:
    log(f"frozen source against live read, {size // GiB} GiB on btrfs")
    vol = Btrfs(scratch, size, "fl")
    try:
        fill(vol.volume, size, 2)
        for rep in range(reps):
            for mode in ("off", "required"):
                # Cold caches for both: the read is what is compared.
                run(["sync"])
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                d, snap = pvsnap_snapshot(pvsnap, scratch / "repo", vol.volume, mode, [])
                samples.append({"what": "snapshot", "mode": mode, "size_gib": size // GiB, "rep": rep,
                                "seconds": d, "source_snapshot": snap.get("source_snapshot")})
    finally:
        vol.close()


def frozen_snapshots(pvsnap: str, scratch: Path, data: Path, preset: str, reps: int, env: dict,
                     samples: list) -> None:
    """`reps` snapshots of `data` with `--freeze preset`, each into a fresh
    repository: the whole time, the freeze window and the native snapshot."""
    for rep in range(reps):
        repo = scratch / f"{preset}-repo"
        shutil.rmtree(repo, ignore_errors=True)
        run([pvsnap, "--repo", str(repo), "init", "-q"], env=env)
        d, r = timed([pvsnap, "--repo", str(repo), "snapshot", str(data), "--freeze", preset,
                      "--source-snapshot", "required", "--json", "-q"], env=env)
        snap = json.loads(r.stdout)
        snap = snap[0] if isinstance(snap, list) else snap
        ss = snap.get("source_snapshot") or {}
        samples.append({"what": "freeze", "preset": preset, "rep": rep, "seconds": d,
                        "freeze_window_s": ss.get("freeze_window_s"), "create_s": ss.get("create_s")})


def freeze_window(pvsnap: str, scratch: Path, reps: int, samples: list, scale: int) -> None:
    pg_bin = Path("/usr/lib/postgresql/15/bin")
    if not (pg_bin / "postgres").exists():
        log("PostgreSQL 15 is not installed: no freeze-window measurement")
        return
    log("freeze window: PostgreSQL on btrfs, --freeze postgres")
    vol = Btrfs(scratch, GiB, "pg")
    # The postgres user must reach its folders below the scratch folder.
    for d in (scratch, vol.mnt, vol.volume):
        os.chmod(d, 0o755)
    data = vol.volume / "pgdata"
    sock = scratch / "pgsock"
    sock.mkdir(exist_ok=True)
    shutil.chown(sock, "postgres")
    data.mkdir()
    shutil.chown(data, "postgres")
    port = "54329"
    as_pg = ["runuser", "-u", "postgres", "--"]
    try:
        run([*as_pg, str(pg_bin / "initdb"), "-D", str(data), "-A", "trust"])
        run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data), "-w", "-l", str(sock / "pg.log"), "-o",
             f"-p {port} -k {sock} -c listen_addresses=''", "start"])
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PVSNAP_")},
               "PGHOST": str(sock), "PGPORT": port, "PGUSER": "postgres"}
        run(["pgbench", "-i", "-s", str(scale), "postgres"], env=env)
        load = subprocess.Popen(["pgbench", "-T", "600", "-c", "2", "postgres"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            frozen_snapshots(pvsnap, scratch, data, "postgres", reps, env, samples)
        finally:
            load.terminate()
            load.wait()
    finally:
        subprocess.run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        vol.close()


# The writers of the MariaDB measurement: each transaction inserts a row
# (two secondary indexes) and updates its writer's counter row.
MYSQL_LOAD = """
CREATE DATABASE bench;
CREATE TABLE bench.ctl (stop INT NOT NULL) ENGINE=InnoDB;
INSERT INTO bench.ctl VALUES (0);
CREATE TABLE bench.counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
INSERT INTO bench.counter VALUES (1, 0), (2, 0);
CREATE TABLE bench.log (id BIGINT AUTO_INCREMENT PRIMARY KEY, writer INT NOT NULL,
  note VARCHAR(80) NOT NULL, KEY (writer, id), KEY (note)) ENGINE=InnoDB;
DELIMITER //
CREATE PROCEDURE bench.load(w INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
  WHILE (SELECT stop FROM bench.ctl) = 0 DO
    SET i = i + 1;
    START TRANSACTION;
    INSERT INTO bench.log (writer, note) VALUES (w, CONCAT('w', w, '-', i));
    UPDATE bench.counter SET n = n + 1 WHERE id = w;
    COMMIT;
  END WHILE;
END//
DELIMITER ;
"""


def freeze_window_mysql(pvsnap: str, scratch: Path, reps: int, samples: list) -> None:
    mariadbd = Path("/usr/sbin/mariadbd")
    if not mariadbd.exists():
        log("MariaDB is not installed: no --freeze mysql measurement")
        return
    log("freeze window: MariaDB on btrfs under two writers, --freeze mysql")
    vol = Btrfs(scratch, GiB, "my")
    run_dir = scratch / "myrun"
    run_dir.mkdir(exist_ok=True)
    for d in (scratch, vol.mnt, vol.volume, run_dir):
        os.chmod(d, 0o755)
    os.chmod(run_dir, 0o777)
    data = vol.volume / "data"
    sock = run_dir / "sock"
    home = run_dir / "home"
    home.mkdir(exist_ok=True)
    # The client's connection as an operator keeps it: an option file.
    (home / ".my.cnf").write_text(f"[client]\nuser=root\nsocket={sock}\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PVSNAP_")}, "HOME": str(home)}
    server = None
    writers = []
    try:
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", "--skip-test-db", f"--datadir={data}",
             f"--tmpdir={run_dir}"])
        server = subprocess.Popen(
            [str(mariadbd), "--no-defaults", "--user=mysql", "--skip-log-bin", "--skip-networking",
             "--innodb-buffer-pool-size=64M", f"--datadir={data}", f"--tmpdir={run_dir}", f"--socket={sock}",
             f"--pid-file={run_dir / 'pid'}", f"--log-error={run_dir / 'mariadbd.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if subprocess.run(["mariadb", "-e", "SELECT 1"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["mariadb"], env=env, input=MYSQL_LOAD, text=True, check=True, capture_output=True)
        writers = [subprocess.Popen(["mariadb", "-e", f"CALL bench.load({w})"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in (1, 2)]
        time.sleep(3)
        frozen_snapshots(pvsnap, scratch, data, "mysql", reps, env, samples)
        rows = run(["mariadb", "-N", "-e", "SELECT count(*) FROM bench.log"], env=env).stdout.strip()
        log(f"MariaDB writers committed {rows} transactions during the measurement")
    finally:
        subprocess.run(["mariadb", "-e", "UPDATE bench.ctl SET stop = 1"], env=env, capture_output=True)
        for w in writers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        vol.close()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(samples: list) -> str:
    out = ["### Native snapshot creation (median seconds)", "",
           "| storage | volume | create s | n |", "|---|---:|---:|---:|"]
    for kind in sorted({s["kind"] for s in samples if s["what"] == "create"}):
        for size in sorted({s["size_gib"] for s in samples if s["what"] == "create" and s["kind"] == kind}):
            xs = [s["seconds"] for s in samples if s["what"] == "create" and s["kind"] == kind
                  and s["size_gib"] == size]
            out.append(f"| {kind} | {size} GiB | {median(xs):.3f} | {len(xs)} |")
    live = [s["seconds"] for s in samples if s["what"] == "snapshot" and s["mode"] == "off"]
    frozen = [s["seconds"] for s in samples if s["what"] == "snapshot" and s["mode"] == "required"]
    if live and frozen:
        ratio = median(frozen) / median(live)
        verdict = "PASS" if ratio <= 1.1 else "MISS"
        out += ["", "### Frozen source against the live read (cold caches, median seconds)", "",
                "| live (`--source-snapshot off`) | frozen (`required`) | ratio | goal | result |",
                "|---:|---:|---:|---|---|",
                f"| {median(live):.2f} | {median(frozen):.2f} | {ratio:.2f} | <= 1.1 | {verdict} |"]
        windows = [s["source_snapshot"].get("create_s") for s in samples
                   if s["what"] == "snapshot" and s["mode"] == "required" and s.get("source_snapshot")]
        windows = [w for w in windows if w is not None]
        if windows:
            out.append(f"\nNative snapshot inside the frozen run: median {median(windows):.3f} s.")
    presets = [p for p in ("postgres", "mysql") if any(s["what"] == "freeze" and s["preset"] == p for s in samples)]
    if presets:
        out += ["", "### Freeze window under load (median seconds)", "",
                "| preset | freeze window | whole snapshot | n | goal | result |", "|---|---:|---:|---:|---|---|"]
    for preset in presets:
        fr = [s for s in samples if s["what"] == "freeze" and s["preset"] == preset]
        w = [s["freeze_window_s"] for s in fr if s["freeze_window_s"] is not None]
        verdict = "PASS" if w and median(w) <= 1.0 else "MISS"
        out.append(f"| {preset} | {median(w):.3f} (min {min(w):.3f}, max {max(w):.3f}) | "
                   f"{median([s['seconds'] for s in fr]):.2f} | {len(fr)} | <= 1 s | {verdict} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pvsnap", default=str(Path(__file__).resolve().parents[2] / "target/release/pvsnap"))
    ap.add_argument("--scratch", default="/work/bench/native")
    ap.add_argument("--sizes", default="1,10", help="volume sizes in GiB for the creation time")
    ap.add_argument("--read-size", type=int, default=2, help="GiB for frozen against live")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of create,btrfs,zfs,read,freeze,mysql to leave out")
    ap.add_argument("--pgbench-scale", type=int, default=20, help="pgbench -s for the postgres freeze window")
    ap.add_argument("--out", help="raw samples as JSON")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("native.py needs root (loop devices, mounts)", file=sys.stderr)
        return 2
    skip = set(filter(None, a.skip.split(",")))
    scratch = Path(a.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=scratch))
    samples: list = []
    kinds = ([Btrfs] if "btrfs" not in skip else []) + \
        ([Zfs] if "zfs" not in skip and shutil.which("zfs-fuse") else [])
    parts = [("create", lambda: creation(kinds, scratch, [int(s) * GiB for s in a.sizes.split(",")], a.reps,
                                         samples)),
             ("read", lambda: frozen_vs_live(a.pvsnap, scratch, a.read_size * GiB, a.reps, samples)),
             ("freeze", lambda: freeze_window(a.pvsnap, scratch, a.reps, samples, a.pgbench_scale)),
             ("mysql", lambda: freeze_window_mysql(a.pvsnap, scratch, a.reps, samples))]
    try:
        for name, part in parts:
            if name in skip:
                continue
            try:
                part()
            except RuntimeError as e:
                # One part failing leaves the others' numbers standing.
                log(f"{name}: FAILED: {e}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if a.out:
        Path(a.out).write_text(json.dumps(samples, indent=1))
    print(report(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
