"""face_recognition's own pipeline on an LFW-style pairs file: one distance per pair.

Usage: PYTHONPATH=tests/reference/fr_shim face_recognition_pairs.py PAIRS.txt IMAGES_DIR OUT.json
Each image: face_recognition.load_image_file → face_encodings (HOG detector, upsample 1, the
5-point model "small", 1 jitter), the first face. Writes
{"distances": [d or null, ...]} in the order of the pairs file (null: no face in one image).
`twin eval pairs --face-recognition OUT.json` scores these with the same folds and thresholds.
"""
import json
import os
import sys

import face_recognition
import numpy as np


def parse_pairs(text):
    lines = [l.split() for l in text.splitlines() if l.strip()]
    out = []
    for parts in lines[1:]:
        if len(parts) == 3:
            out.append(((parts[0], int(parts[1])), (parts[0], int(parts[2]))))
        elif len(parts) == 4:
            out.append(((parts[0], int(parts[1])), (parts[2], int(parts[3]))))
    return out


def main():
    pairs_path, images, out_path = sys.argv[1:4]
    pairs = parse_pairs(open(pairs_path).read())
    cache = {}

    def encoding(key):
        if key not in cache:
            name, n = key
            path = os.path.join(images, name, f"{name}_{n:04d}.jpg")
            img = face_recognition.load_image_file(path)
            enc = face_recognition.face_encodings(img, model="small")
            cache[key] = enc[0] if enc else None
        return cache[key]

    distances = []
    for i, (a, b) in enumerate(pairs):
        ea, eb = encoding(a), encoding(b)
        distances.append(None if ea is None or eb is None else float(np.linalg.norm(ea - eb)))
        if i % 500 == 0:
            print(f"{i}/{len(pairs)} pairs", file=sys.stderr, flush=True)
    with open(out_path, "w") as f:
        json.dump({"distances": distances}, f)


if __name__ == "__main__":
    main()
