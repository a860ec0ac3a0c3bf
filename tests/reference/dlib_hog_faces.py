"""dlib's HOG face boxes as face_recognition finds them, for a list of images.

Usage: PYTHONPATH=tests/reference/fr_shim dlib_hog_faces.py OUT.json (IMAGE... | --list FILE)
`--list FILE` reads the image paths from FILE, one a line (the face set is ~800 paths).
Each image: face_recognition.load_image_file (Pillow, RGB) -> face_locations with
number_of_times_to_upsample=1 and model "hog" (dlib's frontal face detector; the boxes trimmed to
the image as face_recognition trims them). Writes
[{"image": path, "width": w, "height": h, "boxes": [[left, top, right, bottom], ...]}]
in the order given. The benchmark `cargo bench -p twin-tests --bench detection` runs it.
"""
import json
import sys

import face_recognition


def main():
    out_path, rest = sys.argv[1], sys.argv[2:]
    if rest[:1] == ["--list"]:
        with open(rest[1]) as f:
            images = [line.rstrip("\n") for line in f if line.strip()]
    else:
        images = rest
    result = []
    for i, path in enumerate(images):
        img = face_recognition.load_image_file(path)
        locs = face_recognition.face_locations(img, number_of_times_to_upsample=1, model="hog")
        boxes = [[left, top, right, bottom] for (top, right, bottom, left) in locs]
        result.append(
            {"image": path, "width": img.shape[1], "height": img.shape[0], "boxes": boxes}
        )
        if i % 200 == 199:
            print(f"{i + 1}/{len(images)} images", file=sys.stderr, flush=True)
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
