"""Times face_recognition's own end to end on photos: decode, HOG face boxes, encodings.

Usage: PYTHONPATH=tests/reference/fr_shim face_recognition_bench.py WARMUP ROUNDS IMAGE...
For every image: WARMUP untimed runs, then ROUNDS timed runs of
load_image_file -> face_locations (HOG, upsample 1) -> face_encodings (model "small", 1 jitter).
Prints one JSON object: {"images": [{"image", "faces", "ms": [per run]}], "threads": N}.
Run it with OMP_NUM_THREADS=1 (and on one CPU) for a one-thread number.
"""
import json
import os
import sys
import time

import face_recognition


def once(path):
    img = face_recognition.load_image_file(path)
    locs = face_recognition.face_locations(img)
    encs = face_recognition.face_encodings(img, locs)
    return len(encs)


def main():
    warmup, rounds, images = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    out = []
    for path in images:
        for _ in range(warmup):
            once(path)
        ms = []
        faces = 0
        for _ in range(rounds):
            start = time.perf_counter()
            faces = once(path)
            ms.append((time.perf_counter() - start) * 1000.0)
        out.append({"image": path, "faces": faces, "ms": ms})
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    json.dump({"images": out, "cpus": cpus}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
