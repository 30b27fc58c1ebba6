"""Which held-out words of SynthScenes' shift diagnostics each knowledge source reaches by construction.

For every knowledge config in ``configs/knowledge/`` (its source and concept vocabulary, as
``kgitm fit --model.knowledge CONFIG`` builds them) and every held-out word, whether the source maps
the word to a concept that names its category (the category's name or one of its training words).
A word no source reaches can only be understood through what a model learns from features and text
(or a pretrained text encoder). Two word lists are scored:

- ``paraphrase``: the paraphrase list written for the benchmark (``PARAPHRASES`` in
  ``kgitm/data/synthscenes/ontology.py``), which the ``paraphrase_wordnet`` / ``paraphrase_other``
  diagnostic sets use;
- ``legacy``: the words of the legacy synonym-shift set (``Category.shift_word``), chosen as WordNet
  neighbours of the categories, hence reachable by WordNet by construction.

    python scripts/paraphrase_reach.py [--concepts graphs/concepts/synthscenes] [--output docs/results/paraphrase_reach.json]

Run from the repository root after ``kgitm build-concepts`` (the quickstart builds the vocabulary);
configs that read ``../shared/data`` are skipped when it is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kgitm.core.io import atomic_write_json  # noqa: E402
from kgitm.data.synthscenes.ontology import CATEGORIES, PARAPHRASES  # noqa: E402
from kgitm.knowledge.base import concept_key, load_vocabulary  # noqa: E402
from kgitm.models.config import instantiate  # noqa: E402


def word_lists() -> dict[str, dict[str, list[str]]]:
    """``{list name: {category: [held-out words]}}``."""
    return {
        "paraphrase": {c: list(ws) for c, ws in PARAPHRASES.items()},
        "legacy": {c.name: [c.shift_word] for c in CATEGORIES if c.shift_word},
    }


def reach(source, vocabulary: list[str], words: dict[str, list[str]]) -> dict[str, bool]:
    """``{word: reached}``: the source maps the word to a concept naming its category."""
    index = {concept_key(c): i for i, c in enumerate(vocabulary)}
    out = {}
    for category, held_out in words.items():
        cat = next(c for c in CATEGORIES if c.name == category)
        targets = {index[concept_key(w)] for w in (cat.name, *cat.train_words) if concept_key(w) in index}
        for w, hits in zip(held_out, source.concepts_for_words(held_out, vocabulary)):
            out[w] = bool(targets & set(hits))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=Path, default=Path("graphs/concepts/synthscenes"),
                    help="the concept vocabulary folder the knowledge configs name (default: %(default)s)")
    ap.add_argument("--output", type=Path, default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)
    if not (args.concepts / "concepts.json").is_file():
        raise SystemExit(f"paraphrase_reach: {args.concepts}: no concept vocabulary; build it with `kgitm build-concepts "
                         "data/synthscenes/train_caps.txt --name synthscenes --objects 80 --properties 25 --motions 15`")
    lists = word_lists()
    result: dict = {"concepts": str(args.concepts), "words": lists, "sources": {}}
    for config in sorted((REPO / "configs" / "knowledge").glob("*.yaml")):
        text = config.read_text(encoding="utf-8")
        if "../shared/data" in text and not (REPO.parent / "shared" / "data").is_dir():
            print(f"{config.name}: skipped (needs ../shared/data)")
            continue
        spec = yaml.safe_load(text)["init_args"]
        try:
            source = instantiate(spec["source"])
        except Exception as err:  # noqa: BLE001 - a source that cannot be built here (files missing) is reported
            print(f"{config.name}: skipped ({type(err).__name__}: {err})")
            continue
        vocabulary = load_vocabulary(spec["vocabulary"]) if spec.get("vocabulary") else source.vocabulary
        row = {name: reach(source, vocabulary, words) for name, words in lists.items()}
        result["sources"][config.stem] = row
    width = max(map(len, result["sources"])) if result["sources"] else 10
    print(f"{'knowledge config':<{width}}  " + "  ".join(f"{n} reached" for n in lists))
    for name, row in result["sources"].items():
        cells = [f"{sum(r.values()):3d} of {len(r):3d}".rjust(len(n) + 8) for n, r in row.items()]
        print(f"{name:<{width}}  " + "  ".join(cells))
    if args.output:
        atomic_write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
