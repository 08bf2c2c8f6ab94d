#!/usr/bin/env python3
"""Mutation testing for kvevict.h: does the test suite fail when the code is wrong?

Each mutant in the list (tests/mutants.txt) is one small, plausible bug: a line fragment of
kvevict.h and what it becomes. For each mutant this script writes the mutated header into a private
copy of the project (the real kvevict.h is never touched), builds the test programs and runs them,
stopping at the first failure, in this order:

    test_core, test_kernels (portable, then native; only for mutants of the areas softmax and
    attention), test_lifecycle, the golden cases (keys post- and pre-RoPE), test_policies,
    test_properties, test_types (portable, then with this machine's vector instructions), on x86
    test_kernels and test_types built for AVX2 CPUs, the examples' own checks (minimal,
    custom_policy), test_reliability

except that the programs which have killed mutants of the same area run first (most kills per
second of their own run time first): whether a mutant is killed does not depend on the order, only
which program is named for it, and the run takes about half as long.

The test programs use only the public API, so a mutant of the implementation (everything after
`#ifdef KVEVICT_IMPLEMENTATION`) is built as one object of the implementation, linked with the test
programs' objects, which are compiled once for the whole run without it; a mutant of the
declarations rebuilds every program from source. test_kernels reads the implementation's internal
helpers: it is compiled from source with every mutant it runs for.

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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "kvevict.h"
CFLAGS = ["-std=c11", "-w", "-O1", "-fopenmp", "-I."]
IMPL_MARK = "#ifdef KVEVICT_IMPLEMENTATION"
IMPL_DEFINE = "#define KVEVICT_IMPLEMENTATION"


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


def locate(source, m):
    """Where the mutant's fragment starts in the header, or -1 when it is missing or ambiguous."""
    count = source.count(m.old)
    if m.old == m.new or count == 0:
        return -1
    k = m.occurrence or 1
    if (m.occurrence == 0 and count != 1) or k > count:
        return -1
    at = -1
    for _ in range(k):
        at = source.find(m.old, at + 1)
    return at


def apply(source, m):
    """The mutated header, or None when the fragment is missing or ambiguous."""
    at = locate(source, m)
    if at < 0:
        return None
    return source[:at] + m.new + source[at + len(m.old):]


class Stage:
    """One test program (or a group of runs) of the suite; `timeout` scales its clean time."""

    def __init__(self, name, programs, runs, extra_flags=(), exe_suffix="", internal=False, areas=()):
        self.name, self.programs, self.runs = name, programs, runs
        self.extra_flags, self.exe_suffix = list(extra_flags), exe_suffix
        # internal: the program includes the implementation to read its internals, so it is
        # compiled whole with each mutant; areas: it runs only for mutants of these (all if empty)
        self.internal, self.areas = internal, tuple(areas)
        self.timeout = 120.0
        self.clean_seconds = 1.0


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


KERNEL_AREAS = ("softmax", "attention")  # what tests/test_kernels.c checks


def stages():
    return [
        Stage("test_core", ["tests/test_core.c"], [["build/test_core"]]),
        Stage("test_kernels", ["tests/test_kernels.c"], [["build/test_kernels"]],
              internal=True, areas=KERNEL_AREAS),
        Stage("test_kernels_native", ["tests/test_kernels.c"], [["build/test_kernels_native"]],
              extra_flags=["-march=native"], exe_suffix="_native", internal=True, areas=KERNEL_AREAS),
        Stage("test_lifecycle", ["tests/test_lifecycle.c"], [["build/test_lifecycle"]]),
        Stage("golden", ["tests/kvcase.c", "tests/judge.c"], golden_runs()),
        Stage("test_policies", ["tests/test_policies.c"], [["build/test_policies"]]),
        Stage("test_properties", ["tests/test_properties.c"], [["build/test_properties"]]),
        Stage("test_types", ["tests/test_types.c"], [["build/test_types"]]),
        Stage("test_types_native", ["tests/test_types.c"], [["build/test_types_native"]],
              extra_flags=["-march=native"], exe_suffix="_native"),
    ] + ([  # the kernels of x86 CPUs with AVX2 and F16C but not AVX-512
        Stage("test_kernels_avx2", ["tests/test_kernels.c"], [["build/test_kernels_avx2"]],
              extra_flags=["-march=haswell"], exe_suffix="_avx2", internal=True, areas=KERNEL_AREAS),
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
    with open(os.path.join(w, "build", "kvevict_impl.c"), "w", encoding="utf-8") as f:
        f.write(IMPL_DEFINE + '\n#include "kvevict.h"\n')
    return w


def forget_implementation(w):
    """Removes the workdir's compiled implementation, so the next split build compiles its header."""
    for f in os.listdir(os.path.join(w, "build")):
        if f.startswith("kvevict_impl") and f.endswith(".o"):
            os.remove(os.path.join(w, "build", f))


def compile_cmd(args, cwd):
    """Runs the compiler: None on success, else the first line it printed."""
    p = subprocess.run([os.environ.get("CC", "cc")] + args, cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode == 0:
        return None
    first = p.stdout.decode(errors="replace").strip().splitlines()
    return first[0] if first else "compile error"


def program_objects(base, sts):
    """Compiles every stage's programs once, without the implementation (its #define becomes a
    blank line, so line numbers in failure messages stay right): the objects every split build
    links. Returns their directory, or exits when one does not compile."""
    d = os.path.join(base, "objects")
    for st in sts:
        if st.internal:
            continue
        for src in st.programs:
            name = os.path.splitext(os.path.basename(src))[0]
            with open(os.path.join(ROOT, src), encoding="utf-8") as f:
                text = "".join("\n" if line.strip() == IMPL_DEFINE else line for line in f)
            os.makedirs(os.path.join(d, os.path.dirname(src)), exist_ok=True)
            with open(os.path.join(d, src), "w", encoding="utf-8") as f:
                f.write(text)
            # compiled from the copy's own directory under the same relative name, so __FILE__ reads
            # as in a normal build; its includes resolve against the project
            why = compile_cmd(CFLAGS + st.extra_flags + ["-I" + ROOT, "-I" + os.path.join(ROOT, os.path.dirname(src)),
                                                         "-c", src, "-o", name + st.exe_suffix + ".o"], d)
            if why:
                sys.exit("%s does not compile without the implementation: %s" % (src, why))
    return d


def run_stage(w, st, deadline_scale=None, objects=None):
    """Builds and runs one stage in workdir w: ('pass'|'fail'|'timeout'|'invalid', detail, secs).
    With `objects`, links the programs' objects with the workdir's header compiled alone."""
    env = dict(os.environ, OUT=os.path.join(w, "build", "out.txt"))
    # two mutants run at once: OpenMP threads that wait by spinning would take the other's core
    env.setdefault("OMP_WAIT_POLICY", "passive")
    t0 = time.time()
    for src in st.programs:
        exe = os.path.join("build", os.path.splitext(os.path.basename(src))[0] + st.exe_suffix)
        if objects and not st.internal:
            impl = os.path.join("build", "kvevict_impl" + st.exe_suffix + ".o")
            why = None
            if not os.path.exists(os.path.join(w, impl)):
                why = compile_cmd(CFLAGS + st.extra_flags + ["-x", "c", "-c", "build/kvevict_impl.c",
                                                             "-o", impl], w)
            if not why:
                obj = os.path.join(objects, os.path.basename(exe) + ".o")
                why = compile_cmd(CFLAGS + st.extra_flags + [obj, impl, "-o", exe, "-lm"], w)
        else:
            why = compile_cmd(CFLAGS + st.extra_flags + [src, "-o", exe, "-lm"], w)
        if why:
            return "invalid", why, time.time() - t0
    limit = st.timeout if deadline_scale is None else deadline_scale
    for cmd in st.runs:
        left = limit - (time.time() - t0)
        # its own process group: a program run by a shell is stopped with the shell when past time
        p = subprocess.Popen(cmd, cwd=w, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            output = p.communicate(timeout=max(left, 1.0))[0]
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()  # reaps it
            return "timeout", "past %.0f s" % limit, time.time() - t0
        if p.returncode != 0:
            out = output.decode(errors="replace").splitlines()
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

    impl_start = source.index(IMPL_MARK)
    base = tempfile.mkdtemp(prefix="kvevict-mutate.")
    sts = stages()
    try:
        objects = program_objects(base, sts)
        # the clean suite must pass; its times set each stage's limit (10x, at least 30 s)
        w = make_workdir(base, "clean")
        print("clean run of the suite (the mutants' baseline):")
        for st in sts:
            res, why, secs = run_stage(w, st, deadline_scale=600.0, objects=objects)
            print("  %-17s %-7s %6.1f s %s" % (st.name, res, secs, why))
            if res != "pass":
                print("the unmutated suite does not pass; fix that first")
                return 2
            st.timeout = max(30.0, 10.0 * secs)
            st.clean_seconds = secs

        workers = max(1, min(a.jobs, len(todo)))
        free = [make_workdir(base, "w%d" % i) for i in range(workers)]
        print("%d mutants (%d equivalent, not run), %d at a time\n" %
              (len(mutants), len(mutants) - len(todo), workers))

        # the stages that killed mutants of an area so far run first for its next mutants (kills
        # per second of the stage's clean time): a mutant is killed or not whatever the order
        kills, lock = {}, threading.Lock()

        def order(area):
            with lock:
                k = dict(kills.get(area, {}))
            return sorted(sts, key=lambda st: -k.get(st.name, 0) / max(st.clean_seconds, 0.5))

        def one(m):
            w = free.pop()
            try:
                with open(os.path.join(w, HEADER), "w", encoding="utf-8") as f:
                    f.write(apply(source, m))
                forget_implementation(w)
                split = objects if locate(source, m) > impl_start else None
                t0 = time.time()
                m.status, m.detail = "survived", ""
                for st in (sts if a.all_stages else order(m.area)):
                    if st.areas and m.area not in st.areas:
                        continue
                    res, why, _ = run_stage(w, st, objects=split)
                    if res in ("fail", "timeout"):
                        with lock:
                            per_area = kills.setdefault(m.area, {})
                            per_area[st.name] = per_area.get(st.name, 0) + 1
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
