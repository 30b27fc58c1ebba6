"""``kgitm convert-checkpoint``: a released checkpoint of the field -> a kgitm model folder
(:mod:`kgitm.convert`)."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from kgitm.convert import RELEASES, convert_release, load_release_checkpoint, read_release_vocabulary
from kgitm.convert.output import write_conversion
from kgitm.core.io import DataFormatError

EPILOG = """\
what is written:
  DIR/config.yaml      a full kgitm config (model, the release's tokenisation and vocabulary, one device)
  DIR/model.ckpt       the weights as a kgitm checkpoint, holding the vocabulary
  DIR/vocab.txt        the vocabulary, kgitm's order (<pad>, <unk>, <start>, <end>, then the release's ids)
  DIR/release_vocab.txt  GSMN: the release's words in id order (its captions are ids, {split}_precaps_stan.txt)
  DIR/provenance.json  the files converted (sha256), the release's options, epoch and best_rsum

then (GSMN also needs {split}_ims_bbx.npy and a plain {split}_ims_size.npy: kgitm convert-gsmn-sizes):
  kgitm predict --config DIR/config.yaml --ckpt_path DIR/model.ckpt --data.root PRECOMP --sims_out SIMS.npy
  kgitm test    --config DIR/config.yaml --ckpt_path DIR/model.ckpt --data.root PRECOMP

SGRAF's published SGRAF and VSRN's published numbers are two models averaged: convert each (SGRAF: its
SAF and SGR runs; VSRN: model_1 and model_2), then
  kgitm ensemble --run DIR1/config.yaml DIR1/model.ckpt --run DIR2/config.yaml DIR2/model.ckpt -- --data.root PRECOMP

The checkpoint is read with torch.load(weights_only=True): only tensors, plain containers and
argparse.Namespace are unpickled; a vocabulary pickle may hold its Vocabulary class and nothing else.
Every key of the checkpoint and every option of its training command is accounted for: a missing or
unexpected key, or an option kgitm cannot compute, stops the conversion with its name.
See docs/checkpoints.md."""


def main(argv: list[str] | None = None) -> int:
    """``kgitm convert-checkpoint RELEASE CHECKPOINT --vocab VOCAB --out DIR``."""
    ap = argparse.ArgumentParser(
        prog="kgitm convert-checkpoint",
        description="Convert a released image-text matching checkpoint ({'epoch','model','best_rsum','opt','Eiters'}) "
        "and its vocabulary into a kgitm model folder that kgitm predict/test evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("release", choices=sorted(RELEASES), help="; ".join(f"{r.name}: {r.help}" for r in RELEASES.values()))
    ap.add_argument("checkpoint", help="the release's checkpoint (model_best.pth.tar, checkpoint_N.pth.tar)")
    ap.add_argument("--vocab", required=True, help="the vocabulary the model was trained with: SCAN's *_vocab.json or a *_vocab.pkl")
    ap.add_argument("--out", required=True, help="the folder to write (created; files in it are replaced atomically)")
    ap.add_argument(
        "--ignore-option", action="append", default=[], metavar="NAME",
        help="an option of the checkpoint's training command that kgitm does not know and that does not change the "
        "forward pass (repeatable); unknown options are refused otherwise",
    )
    args = ap.parse_args(argv)
    try:
        checkpoint = load_release_checkpoint(args.checkpoint)
        vocab = read_release_vocabulary(args.vocab)
        conv = convert_release(args.release, checkpoint, vocab, ignore_options=args.ignore_option)
        paths = write_conversion(conv, Path(args.out), checkpoint, vocab, command=f"kgitm convert-checkpoint {args.release}")
    except (DataFormatError, pickle.UnpicklingError, OSError, ValueError, RuntimeError) as err:
        print(f"kgitm convert-checkpoint: error: {err}", file=sys.stderr)
        return 1
    print(f"converted {args.release} {args.checkpoint} ({len(conv.vocabulary)} words) into {args.out}")
    print(
        f"evaluate: kgitm predict --config {paths['config.yaml']} --ckpt_path {paths['model.ckpt']} "
        "--data.root PRECOMP --sims_out SIMS.npy"
    )
    return 0
