#!/usr/bin/env python3
"""Reference landmarks and face chips from dlib itself, for twin-core's alignment test.

For every photo given (files, or folders scanned for *.jpg / *.jpeg / *.png, not recursively),
this script:

1. decodes it with Pillow to 8-bit RGB (alpha dropped, EXIF orientation NOT applied) and saves that
   exact array as a PNG, so the Rust side reads the very pixels dlib saw (JPEG decoders differ);
2. finds faces with ``dlib.get_frontal_face_detector()`` (upsample 1);
3. runs ``dlib.shape_predictor(<model>)`` on each box (5 landmarks), and also on a few
   deterministic variants of it (shifted a third of its width up-left, grown 1.7x, shrunk to 0.6x:
   "kind": "variant") so the comparison also covers boxes crossing the image edge, other scales
   and the odd landmark sets they produce;
4. cuts ``dlib.get_face_chip(img, shape, 150, 0.25)`` for every landmark set and saves it as PNG.

It writes ``<out>/reference.json``:

    {"dlib_version": "...", "model": "...",
     "images": [{"source": <photo path>, "decoded": <png name>, "width": w, "height": h,
                 "faces": [{"kind": "detected" | "variant", "box": [l, t, r, b],
                            "landmarks": [[x, y] x5], "chip": <png name>}]}]}

Usage: dlib_landmarks.py OUT_DIR --model SHAPE_PREDICTOR_DAT PHOTO_OR_DIR [PHOTO_OR_DIR ...]
"""

import argparse
import json
import sys
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png"}
CHIP_SIZE = 150
CHIP_PADDING = 0.25


def photos(inputs):
    """Every photo named or found directly inside a named folder, sorted, without repeats."""
    seen = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            sys.exit(f"dlib_landmarks.py: no such photo or folder: {p}")
        for q in found:
            if q not in seen:
                seen.append(q)
    return seen


def variants(box):
    """Deterministic variants of a detector box: shifted up-left, grown, shrunk."""
    l, t, r, b = box.left(), box.top(), box.right(), box.bottom()
    w, h = r - l, b - t
    cx2, cy2 = l + r, t + b  # twice the centre, to stay in integers

    def scaled(num, den):
        hw, hh = w * num // (2 * den), h * num // (2 * den)
        return dlib.rectangle(cx2 // 2 - hw, cy2 // 2 - hh, cx2 // 2 + hw, cy2 // 2 + hh)

    return [
        dlib.rectangle(l - w // 3, t - h // 3, r - w // 3, b - h // 3),
        scaled(17, 10),
        scaled(6, 10),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (created if missing)")
    ap.add_argument("inputs", nargs="+", help="photos, or folders of photos")
    ap.add_argument("--model", required=True, type=Path, help="shape_predictor_5_face_landmarks.dat")
    args = ap.parse_args()

    if not args.model.is_file():
        sys.exit(f"dlib_landmarks.py: model file missing: {args.model}")
    args.out.mkdir(parents=True, exist_ok=True)

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(args.model))

    images = []
    for i, path in enumerate(photos(args.inputs)):
        with Image.open(path) as im:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
        decoded = f"image_{i:03}.png"
        Image.fromarray(rgb).save(args.out / decoded)

        boxes = []
        for box in detector(rgb, 1):
            boxes.append(("detected", box))
            boxes.extend(("variant", v) for v in variants(box))
        faces = []
        for j, (kind, box) in enumerate(boxes):
            shape = predictor(rgb, box)
            if shape.num_parts != 5:
                sys.exit(f"dlib_landmarks.py: expected 5 landmarks, got {shape.num_parts}")
            chip = dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            chip_name = f"chip_{i:03}_{j}.png"
            Image.fromarray(np.asarray(chip, dtype=np.uint8)).save(args.out / chip_name)
            faces.append({
                "kind": kind,
                "box": [box.left(), box.top(), box.right(), box.bottom()],
                "landmarks": [[shape.part(k).x, shape.part(k).y] for k in range(5)],
                "chip": chip_name,
            })
        images.append({
            "source": str(path),
            "decoded": decoded,
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "faces": faces,
        })

    report = {"dlib_version": dlib.__version__, "model": str(args.model), "images": images}
    (args.out / "reference.json").write_text(json.dumps(report, indent=1))
    n_faces = sum(f["kind"] == "detected" for im in images for f in im["faces"])
    n_boxes = sum(len(im["faces"]) for im in images)
    print(f"dlib {dlib.__version__}: {len(images)} photos, {n_faces} faces detected, "
          f"{n_boxes} boxes with variants -> {args.out}")


if __name__ == "__main__":
    main()
