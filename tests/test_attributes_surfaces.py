"""issue 18: the per-face attributes through every surface (CLI, Python API, a real `ferkit serve`), one setting."""

import json
from pathlib import Path

import pytest
from conftest import run_cli, serve_cli

PHOTO = Path(__file__).parent / "data" / "multi_face.jpg"
ASK = "age,gender,pose,spoof"
KEYS = ("age", "gender", "yaw", "pitch", "roll", "spoof_score")


def _attrs(file_result: dict) -> list[dict]:
    return [{k: f.get(k) for k in KEYS} for f in file_result["faces"]]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for fa, fb in zip(a, b, strict=True):
        assert fa["gender"] == fb["gender"] and isinstance(fa["gender"], str), (fa, fb)
        for k in ("age", "yaw", "pitch", "roll", "spoof_score"):
            assert fa[k] is not None and abs(fa[k] - fb[k]) <= 1e-4, (k, fa, fb)


def test_cli_api_server_give_the_same_attributes(tmp_path):
    """--attributes (CLI), attributes= (API), serve --attributes and ?attributes= (HTTP): one answer."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import ferkit

    api = ferkit.analyze(str(PHOTO), attributes=ASK.split(",")).to_dict()
    assert all(f["attribute_reasons"] == {} for f in api["faces"]), api["faces"]
    r = run_cli("predict", PHOTO, "--attributes", ASK, "--quiet")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    _same(_attrs(api), _attrs(cli))
    plain = run_cli("predict", PHOTO, "--quiet", "--format", "csv")  # default: no attribute columns, no cost
    assert plain.returncode == 0 and "age" not in plain.stdout.splitlines()[0].split(","), plain.stdout[:300]
    csv = run_cli("predict", PHOTO, "--quiet", "--format", "csv", "--attributes", ASK)
    assert {"age", "gender", "yaw", "spoof_score"} <= set(csv.stdout.splitlines()[0].split(",")), csv.stdout[:300]

    with serve_cli("--attributes", ASK) as (url, _):

        def post(query: str = "") -> httpx.Response:
            return httpx.post(
                url + "/v1/predict" + query,
                content=PHOTO.read_bytes(),
                headers={"content-type": "image/jpeg"},
                timeout=120,
            )

        served = post()
        assert served.status_code == 200, served.text
        _same(_attrs(api), _attrs(served.json()))
        only_pose = post("?attributes=pose").json()  # the per-request override of that one field
        assert all(f.get("age") is None and f.get("yaw") is not None for f in only_pose["faces"]), only_pose
        for a, b in zip(_attrs(only_pose), _attrs(api), strict=True):
            assert all(abs(a[k] - b[k]) <= 1e-4 for k in ("yaw", "pitch", "roll")), (a, b)
        bad = post("?attributes=foo")
        assert bad.status_code == 422 and "'foo'" in bad.text and "\n" not in bad.text.strip(), bad.text


def test_bad_attributes_is_one_line_exit_2():
    r = run_cli("predict", PHOTO, "--attributes", "age,foo")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'foo'" in lines[0] and "all or none" in lines[0], r.stderr
