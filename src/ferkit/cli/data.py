"""``ferkit data inspect | synth | fetch``."""

from __future__ import annotations

import json

from ferkit.errors import ConfigError


def add_parsers(sub) -> None:
    from ferkit.cli.common import add_command

    d = add_command(
        sub,
        "data",
        "dataset tools: inspect, synth, fetch",
        """
  ferkit data inspect data/fer2013.csv
  ferkit data synth --out data/synth --n 3000 --seed 1
  ferkit data fetch fer2013""",
        cmd_data,
    )
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    di = add_command(
        dsub,
        "inspect",
        "format, splits, class histogram, image size, pixel statistics, problems",
        """
  ferkit data inspect data/fer2013.csv
  ferkit data inspect data/synth --json""",
    )
    di.add_argument("path", help="dataset: FER2013 CSV, class-folder tree, AffectNet-style folder or IDX folder")
    di.add_argument("--format", default=None, help="fer2013, folder, affectnet or idx (default: detected)")
    di.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="resize images to PX x PX while reading (default: keep the dataset's size)",
    )
    di.add_argument("--json", action="store_true", help="machine-readable output")
    ds = add_command(
        dsub,
        "synth",
        "write a synthetic face dataset (for tests and demos, never real accuracy)",
        """
  ferkit data synth --out data/synth --n 3000 --seed 1
  ferkit data synth --out data/synth_fer.csv --layout fer2013 --n 2000""",
    )
    ds.add_argument("--out", required=True, help="output folder (a .csv file for --layout fer2013)")
    ds.add_argument("--n", type=int, default=3000, help="number of faces (default 3000)")
    ds.add_argument("--seed", type=int, default=0, help="random seed: same seed, same dataset (default 0)")
    ds.add_argument("--layout", default="affectnet", help="affectnet (default), folder, fer2013 or me_vs_not")
    ds.add_argument("--size", type=int, default=48, help="image side in pixels (default 48)")
    ds.add_argument("--channels", type=int, default=1, help="1 (grey, default) or 3 (colour)")
    df = add_command(
        dsub,
        "fetch",
        "download a public dataset, or find it already placed, and print its path",
        """
  ferkit data fetch --list
  ferkit data fetch fer2013                 # offline: says which file to download from where, and where to put it
  ferkit data fetch fashion_mnist --root data/""",
    )
    df.add_argument("name", nargs="?", help="dataset name (see --list)")
    df.add_argument(
        "--root", default=None, help="where datasets live (default $FERKIT_DATA_DIR or ~/.cache/ferkit/data)"
    )
    df.add_argument("--force", action="store_true", help="download again even if the files are already there")
    df.add_argument("--list", action="store_true", help="list the datasets this command knows")


def cmd_data(a) -> int:
    from ferkit import api

    if a.data_command == "inspect":
        from ferkit.data import format_inspection

        rep = api.inspect_dataset(a.path, format=a.format, image_size=a.image_size)
        print(json.dumps(rep, indent=2, default=str) if a.json else format_inspection(rep))
        return 0
    if a.data_command == "synth":
        out = api.synthesize(a.out, n=a.n, seed=a.seed, layout=a.layout, size=a.size, channels=a.channels)
        print(f"wrote {a.n} synthetic faces ({a.layout} layout) to {out}")
        return 0
    if a.data_command == "fetch":
        if a.list or not a.name:
            from ferkit.data.fetch import list_datasets

            for row in list_datasets():
                print(f"{row['name']:<22} {row.get('description', '')}")
            return 0 if a.list else 2
        print(api.fetch_dataset(a.name, root=a.root, force=a.force))
        return 0
    raise ConfigError(
        "ferkit data: say what to do: inspect PATH, synth --out DIR or fetch NAME (see ferkit data --help)"
    )
