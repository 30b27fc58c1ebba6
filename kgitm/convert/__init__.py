"""Conversion of released checkpoints of the field into kgitm models (``kgitm convert-checkpoint``).

One module per release (:mod:`kgitm.convert.scan`, :mod:`kgitm.convert.vsepp`, :mod:`kgitm.convert.gsmn`,
:mod:`kgitm.convert.sgraf`, :mod:`kgitm.convert.vse_infty`, :mod:`kgitm.convert.vsrn`) maps the release's
state dicts and options onto kgitm's encoders and matchers; :mod:`kgitm.convert.release` reads the
releases' files safely and accounts for every key and option; :mod:`kgitm.convert.output` writes the
kgitm model folder. :data:`RELEASES` is the registry the command line offers. See ``docs/checkpoints.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kgitm.convert import gsmn, scan, sgraf, vse_infty, vsepp, vsrn
from kgitm.convert.parts import Conversion
from kgitm.convert.release import (
    ReleaseCheckpoint,
    ReleaseFormatError,
    ReleaseVocabulary,
    load_release_checkpoint,
    read_release_vocabulary,
)

__all__ = ["RELEASES", "Conversion", "Release", "ReleaseFormatError", "convert_release", "load_release_checkpoint", "read_release_vocabulary"]


@dataclass(frozen=True)
class Release:
    """A release kgitm converts: its name, a line of help and its converter."""

    name: str
    help: str
    convert: Callable[..., Conversion]


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("scan", "SCAN (kuanghuei/SCAN): t2i/i2t cross attention, json vocabulary", scan.convert),
        Release("vsepp", "VSE++ (fartashf/vsepp) precomp runs: one vector per image, pickled vocabulary", vsepp.convert),
        Release("gsmn", "GSMN (CrossmodalGroup/GSMN): the release's forward, captions as precaps_stan ids, boxes", gsmn.convert),
        Release("sgraf", "SGRAF (Paranioar/SGRAF, python3.6): one SAF or SGR model (opt.module_name); SGRAF = kgitm ensemble of both",
                sgraf.convert),
        Release("vse_infty", "VSE-infinity (woodfrog/vse_infty, bigru): BUTD regions + Bi-GRU, GPO; the BERT variant is refused",
                vse_infty.convert),
        Release("vsrn", "VSRN (KunpengLi1994/VSRN): GCN reasoning + GRU over regions; published numbers = kgitm ensemble of two",
                vsrn.convert),
    )
}


def convert_release(name: str, checkpoint: ReleaseCheckpoint, vocab: ReleaseVocabulary, *, ignore_options: Iterable[str] = ()) -> Conversion:
    """Convert ``checkpoint`` of the release ``name`` (a key of :data:`RELEASES`)."""
    if name not in RELEASES:
        raise ValueError(f"release {name!r}: kgitm converts {', '.join(RELEASES)}")
    return RELEASES[name].convert(checkpoint, vocab, ignore_options=ignore_options)
