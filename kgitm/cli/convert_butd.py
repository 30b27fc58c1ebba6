"""``kgitm convert-butd``: bottom-up-attention TSV -> precomputed features + boxes + image sizes
(:func:`kgitm.data.butd_tsv.convert_butd_tsv`)."""

from __future__ import annotations

import argparse
import sys

from kgitm.data.butd_tsv import ButdFormatError, convert_butd_tsv, read_ids_file


def main(argv: list[str] | None = None) -> int:
    """``kgitm convert-butd``: BUTD TSV -> precomputed features + boxes + sizes."""
    ap = argparse.ArgumentParser(
        prog="kgitm convert-butd",
        description="Convert bottom-up-attention TSV files (image_id, image_w, image_h, num_boxes, boxes, "
        "features; base64 float32) to {split}_ims.npy, {split}_ims_bbx.npy, {split}_ims_size.npy, "
        "{split}_ims_nboxes.npy and {split}_ids.txt.",
    )
    ap.add_argument("tsv", nargs="+", help="BUTD TSV file(s), read in the order given")
    ap.add_argument("--split", required=True, help="split name used in the output file names (e.g. test)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--ids", help="file with one image id per line: output order and selection (default: all rows, TSV order)")
    ap.add_argument("--regions", type=int, default=36, help="regions per image R; fewer boxes are zero-padded (default 36)")
    ap.add_argument("--truncate", action="store_true", help="keep the first R boxes of images that have more (default: error)")
    args = ap.parse_args(argv)
    try:
        s = convert_butd_tsv(
            args.tsv,
            split=args.split,
            out_dir=args.out,
            ids=read_ids_file(args.ids) if args.ids else None,
            regions=args.regions,
            truncate=args.truncate,
        )
    except (ButdFormatError, OSError) as e:
        print(f"kgitm convert-butd: error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {s.num_images} images x {s.regions} regions x {s.feature_dim} dims to {s.out_dir}/{s.split}_ims*.npy "
        f"({s.padded_images} zero-padded, {s.skipped_rows} TSV rows not in --ids)"
    )
    return 0

