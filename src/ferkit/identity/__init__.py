"""Face identity: embeddings, an enrolment gallery (SQLite), verification and its metrics.

    from ferkit.identity import enroll, verify
    enroll("alice", ["alice1.jpg", "alice2.jpg"], gallery="people.sqlite3")
    verify(["door.jpg"], gallery="people.sqlite3")   # [{"identity": "alice", "distance": 0.31, ...}]

Needs the optional ``identity`` extra (dlib); everything else in ferkit works without it. The gallery and
metrics modules need only numpy and the standard library.
"""

from ferkit.identity.gallery import Gallery, GalleryError, calibrate_threshold, default_gallery_path, validate_name
from ferkit.identity.verify import IdentityMatcher, enroll, evaluate_verification, verify

__all__ = [
    "Gallery",
    "GalleryError",
    "IdentityMatcher",
    "calibrate_threshold",
    "default_gallery_path",
    "enroll",
    "evaluate_verification",
    "validate_name",
    "verify",
]
