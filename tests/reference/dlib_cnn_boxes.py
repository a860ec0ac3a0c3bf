"""dlib's CNN face boxes (mmod_human_face_detector.dat) for a list of images.

Usage: dlib_cnn_boxes.py OUT.json UPSAMPLE IMAGE...
Writes [{"image": path, "boxes": [[left, top, right, bottom, score], ...]}] from
dlib.cnn_face_detection_model_v1 at the given upsampling (face_recognition's "cnn" model uses 1).
Images are read with Pillow as RGB.
"""
import json
import os
import sys

import dlib
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "vendor", "models", "mmod_human_face_detector.dat")


def main():
    out_path, upsample, images = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    detector = dlib.cnn_face_detection_model_v1(MODEL)
    result = []
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"))
        boxes = []
        for d in detector(img, upsample):
            r = d.rect
            boxes.append([r.left(), r.top(), r.right(), r.bottom(), d.confidence])
        result.append({"image": path, "boxes": boxes})
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
