"""dlib's HOG face boxes for a list of images (the convention the 5-point predictor was trained on).

Usage: dlib_boxes.py OUT.json IMAGE...
Writes [{"image": path, "boxes": [[left, top, right, bottom], ...], "landmarks": [[[x, y] x5], ...]}]
with dlib's frontal detector at upsample 1 (face_recognition's default) and the 5-point predictor
on each box. Images are read with Pillow as RGB.
"""
import json
import os
import sys

import dlib
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SP = os.path.join(ROOT, "vendor", "models", "shape_predictor_5_face_landmarks.dat")


def main():
    out_path, images = sys.argv[1], sys.argv[2:]
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(SP)
    result = []
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"))
        boxes, marks = [], []
        for r in detector(img, 1):
            boxes.append([r.left(), r.top(), r.right(), r.bottom()])
            s = predictor(img, r)
            marks.append([[s.part(i).x, s.part(i).y] for i in range(5)])
        result.append({"image": path, "boxes": boxes, "landmarks": marks})
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
