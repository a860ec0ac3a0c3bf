"""Stand-in for the face_recognition_models package, pointing at the project's vendor/models.

face_recognition imports this module for its model paths. scripts/setup takes only the ResNet,
the 5-point predictor and the CNN detector from the face-recognition-models package (not the
99 MB 68-point predictor), so the 68-point path points at the 5-point file: face_recognition
loads it at import, and its encodings use the 5-point model (model="small", the default).
Put the folder holding this package first on PYTHONPATH.
"""
import os

_MODELS = os.path.join(
    os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    ),
    "vendor",
    "models",
)


def pose_predictor_model_location():
    return os.path.join(_MODELS, "shape_predictor_5_face_landmarks.dat")


def pose_predictor_five_point_model_location():
    return os.path.join(_MODELS, "shape_predictor_5_face_landmarks.dat")


def face_recognition_model_location():
    return os.path.join(_MODELS, "dlib_face_recognition_resnet_model_v1.dat")


def cnn_face_detector_model_location():
    return os.path.join(_MODELS, "mmod_human_face_detector.dat")
