#!/usr/bin/env python3
"""faiss as the reference for Twin Matcher's exact vector search (tests/benches/search.rs).

Run with the project's venv (made by scripts/setup):

  .venv/bin/python tests/reference/faiss_bench.py --db DB.f32 --queries Q.f32 --dim 128 --k 10 \
      [--threads N] [--blas-threshold N] [--ids-prefix PATH]

DB.f32 and Q.f32 are raw little-endian float32 rows (rows x dim), written by the benchmark so
that both engines search the same vectors. The script loads them into faiss.IndexFlatIP (exact
inner product), warms it up, prints one JSON line describing the setup, then serves commands
read one per line from standard input, answering each with one JSON line on standard output:

  batch    search all queries in one index.search call
           -> {"wall_ms": time of the call, "cpu_ms": process CPU time during it}
  one I    search query I alone (one index.search call), as a server answers one request
           -> {"wall_ms": ..., "cpu_ms": ...}
  quit     -> {"peak_rss_kb": ru_maxrss} and exit

The first batch writes its result ids (int64, queries x k) to PREFIX.batch.i64; quit writes the
ids of the last `one` call of each query to PREFIX.single.i64. The caller compares them with its
own.

--blas-threshold N sets faiss.cvar.distance_compute_blas_threshold: batches of at least N queries
are searched with OpenBLAS's sgemm and a heap per query, smaller ones with faiss's own SIMD loop
(faiss-cpu 1.15 ships 128000, so a batch of 100 takes the SIMD loop unless this is lowered;
older releases shipped 20).

--threads N calls faiss.omp_set_num_threads(N) (faiss and the OpenBLAS it bundles both use
OpenMP); 0 keeps faiss's default (one thread per core). The setup line names the OpenBLAS core
the bundled library chose (it can be forced with OPENBLAS_CORETYPE, which the caller sets or
removes). Nothing is downloaded; nothing but timings, ids and sizes is printed.
"""

import argparse
import ctypes
import json
import os
import resource
import sys
import time

SETUP_HINT = "run scripts/setup from the repository root to install it"


def fail_setup(message):
    """Exit with status 2: the reference is not installed."""
    print(f"faiss_bench: {message}; {SETUP_HINT}", file=sys.stderr)
    sys.exit(2)


try:
    import numpy as np
except ImportError:
    fail_setup("numpy is not installed in this Python")
try:
    import faiss
except ImportError:
    fail_setup("faiss-cpu is not installed in this Python")


def rss_kb():
    """Current resident set size in kB, from /proc/self/status (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def openblas_info():
    """The OpenBLAS library faiss loaded, its build configuration and the core it runs."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({l.split()[-1] for l in f if "openblas" in l.lower() and ".so" in l})
    except OSError:
        libs = []
    if not libs:
        return {"library": None}
    info = {"library": os.path.basename(libs[0])}
    try:
        lib = ctypes.CDLL(libs[0])
        for name in ("openblas_get_corename", "openblas_get_config"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_char_p
            info[name.replace("openblas_get_", "")] = fn().decode()
    except (OSError, AttributeError):
        pass
    return info


def emit(obj):
    print(json.dumps(obj), flush=True)


def load(path, dim):
    rows = np.fromfile(path, dtype="<f4")
    if rows.size % dim:
        sys.exit(f"faiss_bench: {path} holds {rows.size} floats, not a multiple of {dim}")
    return np.ascontiguousarray(rows.reshape(-1, dim), dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blas-threshold", type=int)
    ap.add_argument("--ids-prefix")
    args = ap.parse_args()

    baseline_kb = rss_kb()
    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
    if args.blas_threshold is not None:
        faiss.cvar.distance_compute_blas_threshold = args.blas_threshold
    xb = load(args.db, args.dim)
    xq = load(args.queries, args.dim)
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(args.dim)
    index.add(xb)
    build_s = time.perf_counter() - t0
    del xb
    # Warm-up: the batch and the one-query calls.
    index.search(xq, args.k)
    for i in range(min(3, len(xq))):
        index.search(xq[i : i + 1], args.k)
    emit(
        {
            "faiss_version": faiss.__version__,
            "threads": faiss.omp_get_max_threads(),
            "blas_threshold": faiss.cvar.distance_compute_blas_threshold,
            "rows": int(index.ntotal),
            "queries": int(len(xq)),
            "build_s": build_s,
            "baseline_rss_kb": baseline_kb,
            "openblas": openblas_info(),
        }
    )

    batch_written = False
    single_ids = np.full((len(xq), args.k), -1, dtype=np.int64)

    def timed(fn):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return out, {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3}

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "batch":
            (_, ids), answer = timed(lambda: index.search(xq, args.k))
            if args.ids_prefix and not batch_written:
                ids.astype("<i8").tofile(f"{args.ids_prefix}.batch.i64")
                batch_written = True
            emit(answer)
        elif cmd[0] == "one" and len(cmd) == 2:
            i = int(cmd[1])
            q = xq[i : i + 1]
            (_, ids), answer = timed(lambda: index.search(q, args.k))
            single_ids[i] = ids[0]
            emit(answer)
        elif cmd[0] == "quit":
            if args.ids_prefix:
                single_ids.astype("<i8").tofile(f"{args.ids_prefix}.single.i64")
            emit({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
            return
        else:
            sys.exit(f"faiss_bench: unknown command {line.strip()!r}")


if __name__ == "__main__":
    main()
