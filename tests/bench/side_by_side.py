#!/usr/bin/env python3
"""Side-by-side benchmark: the vendor's reference approach against bitbucket-diy's defaults.

    python3 tests/bench/side_by_side.py --size 200          # quick: a 200 MB home
    python3 tests/bench/side_by_side.py --size 2048         # full: 2 GB
    python3 tests/bench/side_by_side.py --size 200 --write docs/performance.md

Both approaches back up the same synthetic home (real git repositories, attachments, LFS
objects, plugins, excluded caches and logs) and the same PostgreSQL database, against the
simulator run by `bitbucket-diy simulate`:

  reference  rsync prepare pass, lock, drain, rsync final pass and `pg_dump -Fd -j 5` in
             parallel, progress, unlock, `tar czf` (tests/bench/reference-backup.sh);
             restore: `tar xzf`, rsync into the new home, `pg_restore -j 5`.
  ours       `bitbucket-diy backup` with its defaults (native copy, PostgreSQL snapshot export
             with the dump after the unlock, tar + zstd); restore: `bitbucket-diy restore`.

Each runs cold (first backup into an empty working folder) and warm (second backup after about
1 % of the files changed). Lock windows come from the simulator's own event log; peak memory from
`/usr/bin/time -v`. Run it on an otherwise idle machine: it is not part of the test suite.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
CLI = ROOT / "target" / "release" / "bitbucket-diy"
SAMPLE = ROOT / "target" / "release" / "examples" / "sample_home"
PG = ["-U", "postgres", "-h", "127.0.0.1", "-p", "5432"]


def run(cmd, env=None, capture=True, check=True):
    result = subprocess.run(cmd, env=env, text=True, capture_output=capture)
    if check and result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}\n{result.stdout}\n{result.stderr}")
    return result


def timed(cmd, env=None):
    """Run under /usr/bin/time -v; return (seconds, peak RSS in MB, stdout)."""
    start = time.monotonic()
    result = run(["/usr/bin/time", "-v", *map(str, cmd)], env=env)
    seconds = time.monotonic() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return seconds, (int(rss.group(1)) / 1024 if rss else float("nan")), result.stdout


def phases(stdout):
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^phase (\S+) ([\d.]+)$", stdout, re.M)}


def du(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def psql(database, sql):
    return run(["psql", "-X", "-q", "-At", *PG, "-d", database, "-c", sql]).stdout.strip()


class Simulator:
    def __init__(self, drain_delay):
        self.proc = subprocess.Popen(
            [str(CLI), "simulate", "--listen", "127.0.0.1:0", "--drain-delay", f"{drain_delay}s"],
            stdout=subprocess.PIPE, text=True)
        self.url = None
        for line in self.proc.stdout:
            match = re.search(r"(http://127\.0\.0\.1:\d+\S*)", line)
            if match:
                self.url = match.group(1).rstrip("/")
                break
        if not self.url:
            sys.exit("bitbucket-diy simulate printed no URL")

    def lock_window(self):
        with urllib.request.urlopen(f"{self.url}/_simulator/events") as reply:
            return json.load(reply)["lock_window_seconds"]

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def drop_caches():
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError:
        pass


def reference_backup(sim, work, home, db, name):
    env = dict(os.environ, BB_URL=sim.url, BB_USER="admin", BB_PASS="admin", HOME_DIR=str(home),
               BACKUP_ROOT=str(work / "ref-work"), ARCHIVE_ROOT=str(work / "ref-archives"), DB_NAME=db,
               ARCHIVE_NAME=name)
    drop_caches()
    seconds, rss, out = timed(["bash", BENCH / "reference-backup.sh"], env)
    p = phases(out)
    archive = work / "ref-archives" / f"{name}.tar.gz"
    return {"total": seconds, "rss": rss, "lock": sim.lock_window(), "archive": p["archive"],
            "mb": archive.stat().st_size / 1e6, "path": archive}


def our_config(work, sim, home, db):
    config = work / "ours.toml"
    config.write_text(f"""
[bitbucket]
url = "{sim.url}"
user = "admin"
password_env = "BENCH_BB_PASSWORD"

[database]
type = "postgresql"
host = "127.0.0.1"
database = "{db}"
user = "postgres"

[filesystem]
home = "{home}"

[archive]
folder = "{work / 'our-archives'}"

[backup]
working_folder = "{work / 'our-work'}"
poll_interval = "100ms"
""")
    return config


def our_backup(sim, config):
    env = dict(os.environ, BENCH_BB_PASSWORD="admin")
    drop_caches()
    seconds, rss, out = timed([CLI, "--config", config, "--json", "-q", "backup"], env)
    report = json.loads(out)
    archive_phase = sum(p["elapsed"] for p in report["phases"] if p["phase"] == "archive")
    return {"total": seconds, "rss": rss, "lock": sim.lock_window(), "archive": archive_phase,
            "mb": report["archive_bytes"] / 1e6, "path": Path(report["archive"]), "report": report}


def zstd_baseline(folder, work):
    """GNU tar through multithreaded zstd at our level, on a cold cache like our runs."""
    out = work / "baseline.tar.zst"
    drop_caches()
    start = time.monotonic()
    run(["tar", "-I", "zstd -T0 -3", "-cf", out, "-C", folder, "."])
    run(["sync"])
    return time.monotonic() - start


def restore_reference(work, archive, db):
    env = dict(os.environ, ARCHIVE=str(archive), TARGET_HOME=str(work / "ref-restored"),
               TARGET_DB=db, SCRATCH=str(work / "ref-scratch"))
    drop_caches()
    seconds, rss, _ = timed(["bash", BENCH / "reference-restore.sh"], env)
    return seconds, rss


def restore_ours(config, work, archive, db):
    drop_caches()
    seconds, rss, _ = timed([CLI, "--config", config, "-q", "restore", archive.name.split(".tar")[0],
                             "--home", work / "our-restored", "--database", db])
    return seconds, rss


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem} MB RAM, {platform.system()} {platform.release()}"


def ratio(ours, ref):
    return f"{ours / ref:.2f}" if ref else "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200, help="home size in MB (200, 2048, 6144)")
    parser.add_argument("--db-rows", type=int, default=200_000, help="rows of ~150 bytes in the database")
    parser.add_argument("--drain-delay", type=float, default=2.0, help="realistic drain delay (s) for the second warm run")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    args = parser.parse_args()

    for tool in ["jq", "bc", "curl", "rsync", "pg_dump", "zstd"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y {tool if tool != 'pg_dump' else 'postgresql-client'}")
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time is missing: apt-get install -y time")
    print("building release binaries…", flush=True)
    run(["cargo", "build", "--release", "-q", "-p", "bitbucket-diy-cli"], capture=False)
    run(["cargo", "build", "--release", "-q", "-p", "bitbucket-diy-core", "--example", "sample_home"], capture=False)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bbdiy-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    db = f"bbdiy_bench_{os.getpid()}"
    targets = [f"{db}_ref_restore", f"{db}_our_restore"]
    try:
        print(f"generating a {args.size} MB home and a database in {work}…", flush=True)
        if not home.exists():
            run([SAMPLE, "generate", home, str(args.size)])
        run(["createdb", *PG, db])
        psql(db, "CREATE TABLE changeset (id bigserial PRIMARY KEY, repository_id int, commit_id text, message text);"
                 f"INSERT INTO changeset (repository_id, commit_id, message) SELECT g % 500, md5(g::text) || md5((g+1)::text),"
                 f" repeat(md5(g::text), 2) FROM generate_series(1, {args.db_rows}) g;")
        db_mb = int(psql(db, "SELECT pg_database_size(current_database())")) / 1e6
        home_mb = du(home) / 1e6

        results = {}
        sim = Simulator(drain_delay=0)
        try:
            config = our_config(work, sim, home, db)
            results["ref_cold"] = reference_backup(sim, work, home, db, "ref-cold")
            results["ours_cold"] = our_backup(sim, config)
            changed = run([SAMPLE, "mutate", home, "1"]).stdout.strip()
            psql(db, "INSERT INTO changeset (repository_id, commit_id, message) SELECT 1, md5(g::text), 'warm'"
                     f" FROM generate_series(1, {args.db_rows // 100}) g;")
            results["ref_warm"] = reference_backup(sim, work, home, db, "ref-warm")
            results["ours_warm"] = our_backup(sim, config)
        finally:
            sim.stop()
        sim = Simulator(drain_delay=args.drain_delay)
        try:
            config = our_config(work, sim, home, db)
            results["ref_drain"] = reference_backup(sim, work, home, db, "ref-drain")
            results["ours_drain"] = our_backup(sim, config)
        finally:
            sim.stop()

        zstd_seconds = zstd_baseline(work / "our-work", work)
        ref_restore = restore_reference(work, results["ref_warm"]["path"], targets[0])
        our_restore = restore_ours(config, work, results["ours_warm"]["path"], targets[1])
        rows = render(args, results, ref_restore, our_restore, zstd_seconds, home_mb, db_mb, changed)
        print(rows)
        if args.write:
            args.write.write_text(rows)
            print(f"written to {args.write}")
    finally:
        for name in [db, *targets]:
            subprocess.run(["dropdb", *PG, "--if-exists", name], capture_output=True)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def render(args, r, ref_restore, our_restore, zstd_seconds, home_mb, db_mb, changed):
    def row(label, key, fmt="{:.2f}"):
        ref, ours = r[f"ref_{key[0]}"][key[1]], r[f"ours_{key[0]}"][key[1]]
        return f"| {label} | {fmt.format(ref)} | {fmt.format(ours)} | {ratio(ours, ref)} |"

    ours_warm = r["ours_warm"]["report"]
    phase_lines = "\n".join(f"| {p['phase']} | {p['elapsed']:.2f} |" for p in ours_warm["phases"])
    goals = [
        ("warm lock window ≤ 1/3 of the reference (drain delay 0)",
         r["ours_warm"]["lock"] <= r["ref_warm"]["lock"] / 3, f"{r['ours_warm']['lock']:.2f} s vs {r['ref_warm']['lock']:.2f} s"),
        ("archive step ≥ 3× faster than tar czf",
         r["ours_warm"]["archive"] * 3 <= r["ref_warm"]["archive"], f"{r['ours_warm']['archive']:.2f} s vs {r['ref_warm']['archive']:.2f} s"),
        ("archive step no slower than tar -I 'zstd -T0 -3'",
         r["ours_warm"]["archive"] <= zstd_seconds * 1.05, f"{r['ours_warm']['archive']:.2f} s vs {zstd_seconds:.2f} s"),
        ("restore ≤ half the reference restore",
         our_restore[0] * 2 <= ref_restore[0], f"{our_restore[0]:.2f} s vs {ref_restore[0]:.2f} s"),
        ("peak memory < 100 MB (backup and restore)",
         max(r["ours_warm"]["rss"], r["ours_cold"]["rss"], our_restore[1]) < 100,
         f"{max(r['ours_warm']['rss'], r['ours_cold']['rss'], our_restore[1]):.0f} MB"),
    ]
    return f"""# Performance: side by side with the reference approach

Measured by `python3 tests/bench/side_by_side.py --size {args.size} --write docs/performance.md`
on {machine()}, {time.strftime('%Y-%m-%d')}.
Home: {home_mb:.0f} MB of real git repositories, attachments, LFS objects and plugins (plus excluded
caches and logs); database: {db_mb:.0f} MB in PostgreSQL. Warm runs follow a change of {changed} files
(about 1 %) and new database rows. The simulator's drain delay is 0 except where noted, so lock
windows hold only the client's own work.

| measure | reference | ours | ours/reference |
|---|---:|---:|---:|
{row("cold: lock window (s, simulator)", ("cold", "lock"))}
{row("cold: total wall time (s)", ("cold", "total"))}
{row("cold: archive step (s)", ("cold", "archive"))}
{row("cold: peak memory (MB)", ("cold", "rss"), "{:.0f}")}
{row("warm: lock window (s, simulator)", ("warm", "lock"))}
{row("warm: total wall time (s)", ("warm", "total"))}
{row("warm: archive step (s)", ("warm", "archive"))}
{row("warm: archive size (MB)", ("warm", "mb"), "{:.0f}")}
{row("warm: peak memory (MB)", ("warm", "rss"), "{:.0f}")}
{row(f"warm, drain delay {args.drain_delay:g} s: lock window (s)", ("drain", "lock"))}
| restore (s) | {ref_restore[0]:.2f} | {our_restore[0]:.2f} | {ratio(our_restore[0], ref_restore[0])} |
| restore peak memory (MB) | {ref_restore[1]:.0f} | {our_restore[1]:.0f} | {ratio(our_restore[1], ref_restore[1])} |

`tar -I 'zstd -T0 -3' -cf` of our working folder, synced: {zstd_seconds:.2f} s.

## Goals

| goal | met | figures |
|---|---|---|
""" + "\n".join(f"| {g} | {'yes' if ok else '**no**'} | {fig} |" for g, ok, fig in goals) + f"""

## Where our warm run spends its time

| phase | seconds |
|---|---:|
{phase_lines}
"""


if __name__ == "__main__":
    main()
