#!/usr/bin/env python3
"""dlib as the reference ("oracle") for Twin Matcher's embedding engine.

Run with the project's venv (made by scripts/setup): .venv/bin/python tests/reference/dlib_oracle.py

Modes:

  --check
      Import dlib, load the two model files, print what was found as JSON. Exits 2 with a
      message naming scripts/setup when anything is missing.

  --out DIR [--pad FRAC] [--upsample N] [--no-descriptor] [--list FILE] IMAGE...
      For every face dlib's HOG detector (get_frontal_face_detector) finds in each image: the
      5-point shape predictor, dlib.get_face_chip(img, shape, size=150, padding=0.25), the chip
      saved losslessly as DIR/chips/<image#>_<face#>.png, and (unless --no-descriptor)
      face_recognition_model_v1.compute_face_descriptor on that aligned 150x150 chip, read back
      from the PNG (the overload that takes an aligned chip, num_jitters=0). Writes DIR/oracle.json:
        {"dlib_version", "upsample", "pad", "images", "images_without_face": [path],
         "chips": [{"image", "face", "box": [l,t,r,b], "chip_png", "descriptor": [128 floats]}]}
      --pad FRAC adds a black border of FRAC x the image's larger side on every side before
      detection; the HOG detector misses many tight face crops (like data/faces) without it.
      Box coordinates are in the padded image.

  --bench [--warmup N] [--rounds R] [--batch-sizes 1,16] [--list FILE] CHIP_PNG...
      Time compute_face_descriptor on the given 150x150 chips after a warm-up and print one JSON
      object with chips/s per batch size (1 = one call per chip, the aligned-chip overload;
      n > 1 = the overload taking a list of n aligned chips).

Images are read with Pillow and converted to 8-bit RGB (an alpha channel is dropped); EXIF
orientation is not applied, as dlib.load_rgb_image does not apply it either. Nothing here prints
pixel data or descriptors; they only go to the output files.
"""

import argparse
import json
import os
import statistics
import sys
import time

SETUP_HINT = "run scripts/setup from the repository root to install it"
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_MODELS = os.path.join(REPO_ROOT, "vendor", "models")
RECOGNITION_DAT = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_DAT = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_LEN = 128


def fail_setup(message):
    """Exit with status 2: the reference is not installed. Callers treat this as a failure."""
    print(f"dlib_oracle: {message}; {SETUP_HINT}", file=sys.stderr)
    sys.exit(2)


def import_stack():
    try:
        import numpy  # noqa: F401
        from PIL import Image  # noqa: F401
        import dlib  # noqa: F401
    except ImportError as e:
        fail_setup(f"cannot import {e.name or e} in {sys.executable}")
    import numpy as np
    from PIL import Image
    import dlib
    return np, Image, dlib


def model_path(models_dir, name):
    path = os.path.join(models_dir, name)
    if not os.path.isfile(path):
        fail_setup(f"dlib model file {path} is missing")
    return path


def load_rgb(Image, np, path):
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def load_chip(Image, np, path):
    chip = load_rgb(Image, np, path)
    if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3):
        raise SystemExit(f"dlib_oracle: {path} is {chip.shape}, not a {CHIP_SIZE}x{CHIP_SIZE} RGB chip")
    return chip


def descriptor_of(facerec, chip):
    """dlib's 128-d descriptor of one aligned chip (overload: img, num_jitters)."""
    d = facerec.compute_face_descriptor(chip, 0)
    if len(d) != DESCRIPTOR_LEN:
        raise SystemExit(f"dlib_oracle: descriptor has {len(d)} values, not {DESCRIPTOR_LEN}")
    return [float(x) for x in d]


def read_paths(args):
    paths = list(args.paths)
    if args.list:
        with open(args.list, encoding="utf-8") as f:
            paths += [line.rstrip("\n") for line in f if line.strip()]
    return paths


def write_json_atomic(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def cmd_check(args):
    np, Image, dlib = import_stack()
    dlib.shape_predictor(model_path(args.models, LANDMARKS_DAT))
    dlib.face_recognition_model_v1(model_path(args.models, RECOGNITION_DAT))
    print(json.dumps({
        "python": sys.executable,
        "dlib_version": dlib.__version__,
        "dlib_avx": bool(getattr(dlib, "USE_AVX_INSTRUCTIONS", False)),
        "dlib_blas": bool(getattr(dlib, "DLIB_USE_BLAS", False)),
        "numpy_version": np.__version__,
        "models": os.path.abspath(args.models),
    }))


def cmd_cut(args):
    np, Image, dlib = import_stack()
    predictor = dlib.shape_predictor(model_path(args.models, LANDMARKS_DAT))
    facerec = None
    if not args.no_descriptor:
        facerec = dlib.face_recognition_model_v1(model_path(args.models, RECOGNITION_DAT))
    detector = dlib.get_frontal_face_detector()

    paths = read_paths(args)
    if not paths:
        raise SystemExit("dlib_oracle: no images given")
    chips_dir = os.path.join(args.out, "chips")
    os.makedirs(chips_dir, exist_ok=True)

    chips, without_face = [], []
    for i, path in enumerate(paths):
        img = load_rgb(Image, np, path)
        if args.pad > 0:
            p = int(round(args.pad * max(img.shape[0], img.shape[1])))
            img = np.ascontiguousarray(np.pad(img, ((p, p), (p, p), (0, 0)), mode="constant"))
        faces = detector(img, args.upsample)
        if len(faces) == 0:
            without_face.append(path)
        for k, rect in enumerate(faces):
            shape = predictor(img, rect)
            chip = dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            chip_png = os.path.join(chips_dir, f"{i:04d}_{k}.png")
            Image.fromarray(np.asarray(chip, dtype=np.uint8), "RGB").save(chip_png, format="PNG")
            entry = {
                "image": path,
                "face": k,
                "box": [rect.left(), rect.top(), rect.right(), rect.bottom()],
                "chip_png": os.path.abspath(chip_png),
            }
            if facerec is not None:
                # Describe exactly the bytes the Rust side will read: the chip as stored.
                stored = load_chip(Image, np, chip_png)
                if not np.array_equal(stored, chip):
                    raise SystemExit(f"dlib_oracle: {chip_png} did not round-trip losslessly")
                entry["descriptor"] = descriptor_of(facerec, stored)
            chips.append(entry)

    write_json_atomic(os.path.join(args.out, "oracle.json"), {
        "dlib_version": dlib.__version__,
        "upsample": args.upsample,
        "pad": args.pad,
        "images": len(paths),
        "images_without_face": without_face,
        "chips": chips,
    })
    print(json.dumps({"images": len(paths), "images_without_face": len(without_face),
                      "chips": len(chips)}))


def cmd_bench(args):
    np, Image, dlib = import_stack()
    facerec = dlib.face_recognition_model_v1(model_path(args.models, RECOGNITION_DAT))
    paths = read_paths(args)
    if not paths:
        raise SystemExit("dlib_oracle: no chips given")
    chips = [load_chip(Image, np, p) for p in paths]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    for chip in chips[: max(args.warmup, 0)]:
        descriptor_of(facerec, chip)

    results = []
    for b in batch_sizes:
        if b < 1:
            raise SystemExit(f"dlib_oracle: bad batch size {b}")
        per_call = []
        n_done = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(max(args.rounds, 1)):
            for start in range(0, len(chips), b):
                group = chips[start:start + b]
                t0 = time.perf_counter()
                if b == 1:
                    facerec.compute_face_descriptor(group[0], 0)
                else:
                    out = facerec.compute_face_descriptor(group, 0)
                    if len(out) != len(group):
                        raise SystemExit("dlib_oracle: batch overload returned the wrong count")
                per_call.append((time.perf_counter() - t0) / len(group))
                n_done += len(group)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        results.append({
            "batch": b,
            "chips": n_done,
            "seconds": wall,
            "chips_per_s": n_done / wall,
            "ms_per_chip_median": 1000.0 * statistics.median(per_call),
            "cpu_per_wall": cpu / wall,
        })

    print(json.dumps({
        "dlib_version": dlib.__version__,
        "dlib_avx": bool(getattr(dlib, "USE_AVX_INSTRUCTIONS", False)),
        "unique_chips": len(chips),
        "warmup": max(args.warmup, 0),
        "results": results,
    }))


def main():
    ap = argparse.ArgumentParser(description="dlib reference chips, descriptors and timings")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="check that dlib and its models load")
    mode.add_argument("--out", metavar="DIR", help="cut chips and descriptors into DIR")
    mode.add_argument("--bench", action="store_true", help="time compute_face_descriptor")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="folder with the dlib .dat files")
    ap.add_argument("--upsample", type=int, default=1, help="HOG detector upsampling (default 1)")
    ap.add_argument("--pad", type=float, default=0.0,
                    help="black border, as a fraction of the larger side, added before detection")
    ap.add_argument("--no-descriptor", action="store_true", help="cut chips only")
    ap.add_argument("--warmup", type=int, default=3, help="bench: warm-up calls (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="bench: passes over the chips")
    ap.add_argument("--batch-sizes", default="1", help="bench: comma-separated, e.g. 1,16")
    ap.add_argument("--list", metavar="FILE", help="file with one path per line (added to PATHs)")
    ap.add_argument("paths", nargs="*", metavar="PATH")
    args = ap.parse_args()

    if args.check:
        cmd_check(args)
    elif args.bench:
        cmd_bench(args)
    else:
        cmd_cut(args)


if __name__ == "__main__":
    main()
