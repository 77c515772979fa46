"""Face detection, 5-point landmarks and alignment for photos and video frames.

    from ferkit.faces import FaceDetector, load_image, align

    det = FaceDetector.create("retinaface")          # or "mtcnn", "haar", "blazeface"; device="cpu" | "cuda" | "auto"
    img = load_image("party.jpg")                    # upright RGB uint8 (EXIF orientation applied)
    for face in det.detect(img):                     # highest score first
        chip = align(img, face, size=(112, 112))     # eyes/nose/mouth on a fixed template
        print(face.to_dict())

Backends (all bundled, nothing is downloaded; see ``ferkit/faces/README.md`` and ``cards/``):

``retinaface`` (default)
    RetinaFace MobileNet-0.25, WIDER FACE. Boxes + 5 landmarks, robust to pose, blur and small faces.
``mtcnn``
    MTCNN (facenet-pytorch's weights). Boxes + 5 landmarks; slower on big images, weaker on profiles.
``haar``
    OpenCV's frontal-face Haar cascade: no weights to ship, frontal faces only, landmarks *estimated* from
    the box (``Face.landmarks_estimated``), so :func:`align` falls back to :func:`crop`.
``tinyface``, ``ssd_mobilenet``
    face-api 1.7.15's tiny_face_detector and ssd_mobilenetv1: boxes only (landmarks estimated, as Haar's).
``blazeface``
    MediaPipe BlazeFace (back model, from Human 3.3.6): a fixed 256 px letterbox, faces from ~1/20 of the long side up;
    eyes and nose detected, mouth corners placed beside the detected mouth centre.

Landmarks are ``left_eye, right_eye, nose, mouth_left, mouth_right`` where left/right are the *image's*
(``left_eye`` is the subject's right eye in an un-mirrored photo); see :mod:`ferkit.faces.base`.
"""

# The built-in backends (retinaface, mtcnn, haar, tinyface, ssd_mobilenet, blazeface) register themselves when
# FaceDetector.create first names them (ferkit.faces.base.BUILTIN_BACKENDS), so a RetinaFace run on ONNX Runtime
# imports no torch.
from ferkit.faces.align import align, alignment_matrix, crop, template
from ferkit.faces.base import (
    LANDMARK_NAMES,
    Face,
    FaceDetector,
    available_backends,
    register_backend,
)
from ferkit.faces.io import load_image

__all__ = [
    "Face",
    "FaceDetector",
    "LANDMARK_NAMES",
    "align",
    "alignment_matrix",
    "available_backends",
    "crop",
    "load_image",
    "register_backend",
    "template",
]
