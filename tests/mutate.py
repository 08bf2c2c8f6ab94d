#!/usr/bin/env python3
"""Mutation testing for kvevict.h: does the test suite fail when the code is wrong?

Each mutant in the list (tests/mutants.txt) is one small, plausible bug: a line fragment of
kvevict.h and what it becomes. For each mutant this script writes the mutated header into a private
copy of the project (the real kvevict.h is never touched), builds the test programs and runs them,
cheapest first, stopping at the first failure:

    test_core, test_lifecycle, the golden cases (keys post- and pre-RoPE), test_policies, test_properties,
    test_types (portable, then with this machine's vector instructions), the examples' own checks (minimal, custom_policy), test_reliability

A mutant is *killed* when a program fails, crashes or runs past its time limit; *survived* when
everything passes; *invalid* when it does not compile. Mutants marked `equivalent:` in the list
cannot change behaviour; they are not run (unless --run-equivalent) and are left out of the
percentage. The run prints a table and ends with `killed K of N (P%)`; it exits 1 below --target.

List format (blocks separated by blank lines; `#` starts a comment line):

    [id] area
    - exact text of a fragment of one line of kvevict.h (leading spaces may be left out)
    + the text that replaces it
    occurrence N          optional: the fragment's N-th occurrence (1-based) when not unique
    equivalent: reason    optional: the mutant cannot change behaviour, and why

usage: python3 tests/mutate.py [--list FILE] [--jobs N] [--only ID,ID] [--area A] [--sample F]
                               [--seed S] [--target P] [--all-stages] [--run-equivalent] [--keep]
"""
import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "kvevict.h"
CFLAGS = ["-std=c11", "-w", "-O1", "-fopenmp", "-I."]


class Mutant:
    def __init__(self, mid, area, line):
        self.id, self.area, self.line = mid, area, line
        self.old = self.new = None
        self.occurrence = 0  # 0: must be unique
        self.equivalent = None
        self.status = self.detail = ""
        self.seconds = 0.0


def parse_list(path):
    mutants, cur, ids = [], None, set()
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            where = "%s:%d" % (path, n)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("["):
                end = line.find("]")
                if end < 0:
                    sys.exit("%s: expected [id] area" % where)
                mid, area = line[1:end].strip(), line[end + 1:].strip() or "other"
                if mid in ids:
                    sys.exit("%s: duplicate id %s" % (where, mid))
                ids.add(mid)
                cur = Mutant(mid, area, n)
                mutants.append(cur)
            elif cur is None:
                sys.exit("%s: text before the first [id]" % where)
            elif line.startswith("- "):
                cur.old = line[2:]
            elif line.startswith("+ ") or line == "+":
                cur.new = line[2:]
            elif line.startswith("occurrence "):
                cur.occurrence = int(line.split()[1])
            elif line.startswith("equivalent:"):
                cur.equivalent = line[len("equivalent:"):].strip() or "(no reason given)"
            else:
                sys.exit("%s: cannot parse: %s" % (where, line))
    for m in mutants:
        if m.old is None or m.new is None:
            sys.exit("%s:%d: mutant %s needs a '- ' and a '+ ' line" % (path, m.line, m.id))
    return mutants


def apply(source, m):
    """The mutated header, or None when the fragment is missing or ambiguous."""
    count = source.count(m.old)
    if m.old == m.new or count == 0:
        return None
    k = m.occurrence or 1
    if (m.occurrence == 0 and count != 1) or k > count:
        return None
    at = -1
    for _ in range(k):
        at = source.find(m.old, at + 1)
    return source[:at] + m.new + source[at + len(m.old):]


class Stage:
    """One test program (or a group of runs) of the suite; `timeout` scales its clean time."""

    def __init__(self, name, programs, runs, extra_flags=(), exe_suffix=""):
        self.name, self.programs, self.runs = name, programs, runs
        self.extra_flags, self.exe_suffix = list(extra_flags), exe_suffix
        self.timeout = 120.0


def golden_runs():
    runs = []
    gdir = os.path.join(ROOT, "tests", "golden")
    for f in sorted(os.listdir(gdir)):
        if f.endswith(".case"):
            for keys in ("post", "pre"):
                case = "tests/golden/" + f
                runs.append(["sh", "-c", 'build/kvcase %s --keys %s > "$OUT" && build/judge %s "$OUT"'
                             % (case, keys, case)])
    return runs


def stages():
    return [
        Stage("test_core", ["tests/test_core.c"], [["build/test_core"]]),
        Stage("test_lifecycle", ["tests/test_lifecycle.c"], [["build/test_lifecycle"]]),
        Stage("golden", ["tests/kvcase.c", "tests/judge.c"], golden_runs()),
        Stage("test_policies", ["tests/test_policies.c"], [["build/test_policies"]]),
        Stage("test_properties", ["tests/test_properties.c"], [["build/test_properties"]]),
        Stage("test_types", ["tests/test_types.c"], [["build/test_types"]]),
        Stage("test_types_native", ["tests/test_types.c"], [["build/test_types_native"]],
              extra_flags=["-march=native"], exe_suffix="_native"),
    ] + ([  # the kernels of x86 CPUs with AVX2 and F16C but not AVX-512
        Stage("test_types_avx2", ["tests/test_types.c"], [["build/test_types_avx2"]],
              extra_flags=["-march=haswell"], exe_suffix="_avx2"),
    ] if platform.machine() in ("x86_64", "AMD64", "i386", "i686") else []) + [
        Stage("examples", ["examples/minimal.c", "examples/custom_policy.c"],
              [["sh", "tests/examples_check.sh", "build"]]),
        Stage("test_reliability", ["tests/test_reliability.c"], [["build/test_reliability"]]),
    ]


def make_workdir(base, name):
    """A private copy of what the suite needs: the header, tests/ and examples/."""
    w = os.path.join(base, name)
    os.makedirs(os.path.join(w, "build"))
    shutil.copy(os.path.join(ROOT, HEADER), w)
    for d in ("tests", "examples"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(w, d),
                        ignore=shutil.ignore_patterns("fuzz-corpus"))
    return w


def run_stage(w, st, deadline_scale=None):
    """Builds and runs one stage in workdir w: ('pass'|'fail'|'timeout'|'invalid', detail, secs)."""
    env = dict(os.environ, OUT=os.path.join(w, "build", "out.txt"))
    t0 = time.time()
    for src in st.programs:
        exe = os.path.join("build", os.path.splitext(os.path.basename(src))[0] + st.exe_suffix)
        p = subprocess.run([os.environ.get("CC", "cc")] + CFLAGS + st.extra_flags + [src, "-o", exe, "-lm"],
                           cwd=w, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            first = p.stdout.decode(errors="replace").strip().splitlines()
            return "invalid", (first[0] if first else "compile error"), time.time() - t0
    limit = st.timeout if deadline_scale is None else deadline_scale
    for cmd in st.runs:
        left = limit - (time.time() - t0)
        try:
            p = subprocess.run(cmd, cwd=w, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=max(left, 1.0))
        except subprocess.TimeoutExpired:
            return "timeout", "past %.0f s" % limit, time.time() - t0
        if p.returncode != 0:
            out = p.stdout.decode(errors="replace").splitlines()
            fails = [x for x in out if "FAIL" in x or "mismatch" in x.lower()]
            why = (fails[0] if fails else (out[-1] if out else "")).strip()
            if p.returncode < 0:
                why = "signal %d %s" % (-p.returncode, why)
            return "fail", why[:90], time.time() - t0
    return "pass", "", time.time() - t0


def main():
    ap = argparse.ArgumentParser(description="mutation testing of kvevict.h against its test suite")
    ap.add_argument("--list", default=os.path.join(ROOT, "tests", "mutants.txt"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default="", help="comma-separated mutant ids")
    ap.add_argument("--area", default="", help="only mutants of this area")
    ap.add_argument("--sample", type=float, default=1.0, help="fraction of the list to run")
    ap.add_argument("--seed", type=int, default=1, help="seed of --sample")
    ap.add_argument("--target", type=float, default=97.0, help="percent killed required")
    ap.add_argument("--all-stages", action="store_true",
                    help="run every stage on each mutant (shows which stages kill it)")
    ap.add_argument("--run-equivalent", action="store_true",
                    help="also run mutants marked equivalent (to re-check the claim)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    a = ap.parse_args()

    with open(os.path.join(ROOT, HEADER), encoding="utf-8") as f:
        source = f.read()
    mutants = parse_list(a.list)
    stale = [m for m in mutants if apply(source, m) is None]
    for m in stale:
        print("mutant %s (%s line %d) does not apply: its text is missing or not unique"
              % (m.id, os.path.basename(a.list), m.line))
    if stale:
        print("update the list to the current kvevict.h")
        return 2
    if a.only:
        want = set(a.only.split(","))
        mutants = [m for m in mutants if m.id in want]
    if a.area:
        mutants = [m for m in mutants if m.area == a.area]
    if a.sample < 1.0:
        rng = random.Random(a.seed)
        mutants = sorted(rng.sample(mutants, max(1, round(len(mutants) * a.sample))),
                         key=lambda m: m.line)
    todo = [m for m in mutants if a.run_equivalent or not m.equivalent]
    for m in mutants:
        if m.equivalent and not a.run_equivalent:
            m.status, m.detail = "equivalent", m.equivalent

    base = tempfile.mkdtemp(prefix="kvevict-mutate.")
    sts = stages()
    try:
        # the clean suite must pass; its times set each stage's limit (10x, at least 30 s)
        w = make_workdir(base, "clean")
        print("clean run of the suite (the mutants' baseline):")
        for st in sts:
            res, why, secs = run_stage(w, st, deadline_scale=600.0)
            print("  %-17s %-7s %6.1f s %s" % (st.name, res, secs, why))
            if res != "pass":
                print("the unmutated suite does not pass; fix that first")
                return 2
            st.timeout = max(30.0, 10.0 * secs)

        workers = max(1, min(a.jobs, len(todo)))
        free = [make_workdir(base, "w%d" % i) for i in range(workers)]
        print("%d mutants (%d equivalent, not run), %d at a time\n" %
              (len(mutants), len(mutants) - len(todo), workers))

        def one(m):
            w = free.pop()
            try:
                with open(os.path.join(w, HEADER), "w", encoding="utf-8") as f:
                    f.write(apply(source, m))
                t0 = time.time()
                m.status, m.detail = "survived", ""
                for st in sts:
                    res, why, _ = run_stage(w, st)
                    if res == "invalid":
                        m.status, m.detail = "invalid", why
                        break
                    if res in ("fail", "timeout"):
                        if m.status != "killed":
                            m.status, m.detail = "killed", "%s: %s" % (st.name, why)
                        else:
                            m.detail += ", " + st.name
                        if not a.all_stages:
                            break
                m.seconds = time.time() - t0
                print("  %-28s %-12s %-9s %5.1f s  %s" %
                      (m.id, m.area, m.status, m.seconds, m.detail[:70]), flush=True)
            finally:
                free.append(w)

        t_start = time.time()
        with ThreadPoolExecutor(max_workers=workers) as ex:
            list(ex.map(one, todo))
        elapsed = time.time() - t_start
    finally:
        if a.keep:
            print("work directories kept in", base)
        else:
            shutil.rmtree(base, ignore_errors=True)

    print("\n%-28s %-12s %-10s %s" % ("mutant", "area", "result", "detail"))
    for m in mutants:
        print("%-28s %-12s %-10s %s" % (m.id, m.area, m.status, m.detail[:80]))
    areas = {}
    for m in mutants:
        k, n = areas.get(m.area, (0, 0))
        if m.status in ("killed", "survived"):
            areas[m.area] = (k + (m.status == "killed"), n + 1)
    print("\nby area: " + ", ".join("%s %d/%d" % (ar, k, n) for ar, (k, n) in sorted(areas.items())))
    killed = sum(m.status == "killed" for m in mutants)
    counted = sum(m.status in ("killed", "survived") for m in mutants)
    invalid = [m.id for m in mutants if m.status == "invalid"]
    equiv = sum(m.status == "equivalent" for m in mutants)
    survived = [m.id for m in mutants if m.status == "survived"]
    if invalid:
        print("invalid (do not compile, left out): " + ", ".join(invalid))
    if survived:
        print("survived: " + ", ".join(survived))
    pct = 100.0 * killed / counted if counted else 100.0
    print("%d equivalent left out; %.0f s for %d mutants" % (equiv, elapsed, len(todo)))
    print("killed %d of %d (%.1f%%)" % (killed, counted, pct))
    if pct + 1e-9 < a.target:
        print("below the target of %.0f%%" % a.target)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
