"""face_recognition's own end to end on a list of photos: HOG boxes, 5-point landmarks, encodings.

Usage: PYTHONPATH=tests/reference/fr_shim face_recognition_e2e.py OUT.json IMAGE...
Writes [{"image": path, "faces": [{"box": [left, top, right, bottom], "encoding": [128]}]}] using
face_recognition.face_locations (HOG, upsample 1) and face_encodings (model "small", 1 jitter).
Images are read with face_recognition.load_image_file (Pillow, RGB).
"""
import json
import sys

import face_recognition


def main():
    out_path, images = sys.argv[1], sys.argv[2:]
    result = []
    for path in images:
        img = face_recognition.load_image_file(path)
        locs = face_recognition.face_locations(img)
        encs = face_recognition.face_encodings(img, locs)
        faces = []
        for (top, right, bottom, left), e in zip(locs, encs):
            faces.append({"box": [left, top, right, bottom], "encoding": [float(x) for x in e]})
        result.append({"image": path, "faces": faces})
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
