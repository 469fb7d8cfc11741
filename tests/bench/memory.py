#!/usr/bin/env python3
"""Peak memory of bitbucket-diy's backup, verify and restore at several home sizes.

    python3 tests/bench/memory.py --sizes 200 2048 --workdir /var/tmp/bbdiy-memory
    python3 tests/bench/memory.py --sizes 200 --small-files 1000000    # a million more entries

The goal (issue 9) is a peak under 100 MB that does not grow with the home: file content is
streamed, and per-file metadata is spooled to disk rather than held. Each size gets its own
synthetic home (kept in the work folder and reused by later runs) and a small PostgreSQL
database; the runs use the CLI's defaults against `bitbucket-diy simulate`. Peak memory is the
maximum resident set size reported by `/usr/bin/time -v`. Not part of the test suite.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from side_by_side import CLI, PG, SAMPLE, Simulator, du, machine, our_config, psql, run, timed


def add_small_files(home, count):
    """`count` files of a few bytes, 1000 to a folder, as attachments: many entries, few bytes."""
    root = home / "shared" / "data" / "attachments" / "bench-small-files"
    for i in range(count):
        folder = root / f"{i // 1000:05d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True)
        (folder / f"{i % 1000:03d}.txt").write_text(f"attachment {i}\n")


def measure(work, size, db_rows, small_files):
    home = work / (f"home-{size}" if not small_files else f"home-{size}-plus-{small_files}")
    if not home.exists():
        run([SAMPLE, "generate", home, str(size)])
        add_small_files(home, small_files)
    db = f"bbdiy_memory_{os.getpid()}_{size}_{small_files}"
    target_db = f"{db}_restored"
    runs = work / f"runs-{home.name}"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    try:
        run(["createdb", *PG, db])
        psql(db, "CREATE TABLE changeset (id bigserial PRIMARY KEY, message text);"
                 f"INSERT INTO changeset (message) SELECT repeat(md5(g::text), 4) FROM generate_series(1, {db_rows}) g;")
        sim = Simulator(drain_delay=0)
        try:
            config = our_config(runs, sim, home, db)
            env = dict(os.environ, BENCH_BB_PASSWORD="admin")
            backup = timed([CLI, "--config", config, "--json", "-q", "backup"], env)
            archive = Path(json.loads(backup[2])["archive"]).name.split(".tar")[0]
            verify = timed([CLI, "--config", config, "-q", "verify", "--latest"], env)
            restore = timed([CLI, "--config", config, "-q", "restore", archive,
                             "--home", runs / "restored", "--database", target_db], env)
        finally:
            sim.stop()
        files = sum(1 for _ in home.rglob("*"))
        return {"size": size, "mb": du(home) / 1e6, "entries": files,
                "backup": backup[1], "verify": verify[1], "restore": restore[1]}
    finally:
        for name in [db, target_db]:
            subprocess.run(["dropdb", *PG, "--if-exists", name], capture_output=True)
        shutil.rmtree(runs, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2048], help="home sizes in MB")
    parser.add_argument("--db-rows", type=int, default=100_000, help="rows of ~130 bytes in the database")
    parser.add_argument("--small-files", type=int, default=0,
                        help="add this many files of a few bytes to each home (memory against the number of files)")
    parser.add_argument("--workdir", type=Path, help="scratch folder, homes kept between runs (default: temporary)")
    args = parser.parse_args()

    run(["cargo", "build", "--release", "-q", "-p", "bitbucket-diy-cli"], capture=False)
    run(["cargo", "build", "--release", "-q", "-p", "bitbucket-diy-core", "--example", "sample_home"], capture=False)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bbdiy-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = [measure(work, size, args.db_rows, args.small_files) for size in args.sizes]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {machine()}")
    print("| home | entries | backup | verify | restore |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mb']:.0f} MB | {r['entries']:,} | {r['backup']:.0f} MB | {r['verify']:.0f} MB | {r['restore']:.0f} MB |")


if __name__ == "__main__":
    main()
