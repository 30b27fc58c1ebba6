"""SynthScenes output pinned byte for byte: the ``tiny`` preset with seed 0 must write exactly these
files with exactly these SHA-256 digests (``TINY_SEED0_SHA256``: the files of kgitm 0.1, unchanged
since; ``ADDED_SHA256``: files added later, and ``meta.json``).

The table was recorded on the single-module generator (``kgitm/data/synthscenes.py`` at commit
c241e29, before it became the ``kgitm/data/synthscenes/`` package) with numpy 2.4.6 on x86-64, so a
refactoring that changes any byte of the data set fails here. Nothing in the output is machine
dependent by design: no absolute paths, no timestamps (the temporary folder name used while
writing is not part of the result), and ``meta.json`` holds only the config, the vocabulary and
counts. The float bytes come from numpy's PCG64 streams and elementwise float32/float64 arithmetic;
should a future numpy change a random stream or a reduction's rounding, this test says which files
moved and the table must be re-recorded together with a ``GENERATOR_VERSION`` bump.

Generator 1.2 added the nine ``{split}_scene_graphs_{predcls,sgcls,sgdet}.json`` files of the simulated
scene-graph generator (their own random streams, spawned after the others; scores rounded to 6
decimals, boxes to 0.01 px, no BLAS) and re-recorded one digest, ``meta.json``'s: its config gained
``predicted_graphs`` and it gained the appended ``predicted_scene_graphs`` record. Every other digest
is still the one recorded at c241e29.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kgitm.data.synthscenes import generate

TINY_SEED0_SHA256 = {
    "dev_caps.txt": "57241deb66358e0c6b00bd14eb36764b5eb65f789ef81abe4ab60108608faf31",
    "dev_ids.txt": "4b147bafe8122eb3e1aa6615ab057d87c793470f236450cf31b018f48f6fd664",
    "dev_ims.npy": "d5cfc9e27b52db0187180be6294a8257f7dc84a3a183241483e7ba2ee0f7e91f",
    "dev_ims_bbx.npy": "e041b9ef0a0eee2da391a786d65be2cfe597a501ab20075625b144df06d68473",
    "dev_ims_size.npy": "cb69d1434333d1daf6223447cef3036a7b4bdaee5bb7c5d13a97cc2cf77df60d",
    "dev_scene_graphs.json": "2dd0ec6f4666885b20bfd3f18026e015f5d9b3a736125c9f46127378c7028c32",
    "diagnostics/test_attribute_swap.jsonl": "81b76296d2a1585d5e6ef89157c197d442b54a6eecc68c67df73717d441dd265",
    "diagnostics/test_attribute_swap_negative_caps.txt": "471468a561856ccb8f1b45d2f75237299bf0a3b99a106afc7467e5ceda20ea27",
    "diagnostics/test_attribute_swap_positive_caps.txt": "d82ac5a51d7da062bbd53f842ddcd422204d64eec41384fd2b2aca77fe199413",
    "diagnostics/test_relation_swap.jsonl": "06009607af902a4627b65ec0afb4eac0fda4a2d2d936a4811dff1c82f5492db1",
    "diagnostics/test_relation_swap_negative_caps.txt": "daca7085dbc1f8e1a5918332ffec26a3132c0047c1f17cb1f0270a1169f4d819",
    "diagnostics/test_relation_swap_positive_caps.txt": "441ccc085ae58a105b26c22f72eb57a148e247f07d4524b36b08819dcb63623c",
    "diagnostics/test_synonym_shift_caps.txt": "5f968426b0ef05a85294d507abffa1b38ccad4032e9a50d3cb93c244248fcb71",
    "test_caps.txt": "6ee3a9ed4820f415df5118d57b04d34ff20cd2a859abca16c34daefc1bbf9e3f",
    "test_ids.txt": "b2f2a44d7a548753858d53477035cf1abb623c78b1ef7d32d06b71fb60f0253d",
    "test_ims.npy": "a5ad8c46133bda05192a365065374b51134510177f501f3cc0fa994b0860eb5c",
    "test_ims_bbx.npy": "229c96f665144815852401cdb212412f9eeee771818d685335357fb898f569c2",
    "test_ims_size.npy": "ace8643f397e4cd4d2377d545eb884b0af783aa95dce385a177ab42e47572165",
    "test_scene_graphs.json": "6bfd21f87631e7d44ab7d2af5dc9cc316d37757f4169bf3c7b451a78b893b76c",
    "train_caps.txt": "30abeaabbd9a8a89e81a9442a3ab44a7e1f4ed9f97684219310f162e798de1e8",
    "train_ids.txt": "b0b848fe250753ec523e97b8fbd1b6f851614fa29ad0dff25684e3762887749a",
    "train_ims.npy": "a28fd05a2cffc162fb75a281499e473b0ce7bb98f606af8abd0ef45c77aae9d9",
    "train_ims_bbx.npy": "07f110a45944021d973a025ebb4addc59f329ec527531a379e869096f1387a37",
    "train_ims_size.npy": "e56792b03cfe39b7585e38b271bc9df41560a874d1cbc65996c3f79e760e23a6",
    "train_scene_graphs.json": "e525473ce7310f70a8df85f5dae6fa7c4243c65fce0a5d2e277293905c94bb52",
}


#: files added since, and meta.json (which gains a key with each addition); every file above keeps
#: its 0.1 bytes
ADDED_SHA256 = {
    # predicted scene graphs (generator 1.2: their own streams, the third child of each split's seed)
    "dev_scene_graphs_predcls.json": "6ebdd6a1beee7eb9540294d87e2ac2e477f34f7d86876651b34af1e7288e7998",
    "dev_scene_graphs_sgcls.json": "140195336e5ed091c076534e6fdde951b47f0308137997632541bcf97307cde3",
    "dev_scene_graphs_sgdet.json": "58222ffc2e494125418334d149f374bf3975ca570d17bfeceb841c7206eefa09",
    "test_scene_graphs_predcls.json": "dc43220d90223311ba709eaa2f50c34ba47957bd64fe95c3006d13a8b3f8c8e0",
    "test_scene_graphs_sgcls.json": "c15fd5a84254519e6a6683812db5f0c6bc76c64552d5cd9391aeb19fcf642055",
    "test_scene_graphs_sgdet.json": "3902b016f44f4b92a6c6a4708b6b9d1e3f76f3bcd2ee3366a9a52364b65906cc",
    "train_scene_graphs_predcls.json": "cd7e82a963015ce0f02ebf60e2cde8d03a627ee3a9cdd9d676f1e30a0aab4615",
    "train_scene_graphs_sgcls.json": "45e2fc7f7184084abdcea3907fd97555a6d61596a9e0f79e03d97958264f0269",
    "train_scene_graphs_sgdet.json": "b9afc27a813bb1a39c1c8c8698ffc4cec3480598080403574d7fbe2880bbe099",
    # dev diagnostics (the fourth child) and the paraphrase-shift sets
    "diagnostics/dev_attribute_swap.jsonl": "a4f41dc6cc1e45cc7d1c8e739ec18c70cc7cc2a7ffb814e3056479fb9d8e5ccb",
    "diagnostics/dev_attribute_swap_negative_caps.txt": "d44327bf4babd252b69d19d4ea4efbc64a06fcf81dddf0e49821fe61c7048c79",
    "diagnostics/dev_attribute_swap_positive_caps.txt": "e951131d6207fb9367b177c2be49d7a5df37c137eabc20e0bd75f2785e15f1f7",
    "diagnostics/dev_paraphrase_other_caps.txt": "e3cd5a4fb396911614efc619b24e0490901b340779da0fe2d6fc98f079f064a7",
    "diagnostics/dev_paraphrase_wordnet_caps.txt": "f8bafe8f52260a89eadcc9ec15f4c42242ebb6a1e01aa82f33af55cd8fb2b06a",
    "diagnostics/dev_relation_swap.jsonl": "629c65be83fa0c82d860e0173304d91dcecb76de6aa831b701651d61af178878",
    "diagnostics/dev_relation_swap_negative_caps.txt": "122016aa49e0dd656c49b004d038900839e6db599d362f5f572ebed6612572b2",
    "diagnostics/dev_relation_swap_positive_caps.txt": "842912ec972d32d4808b5c65648704fe1185c92cf7d9cf60e34d69fa4a04e1f7",
    "diagnostics/dev_synonym_shift_caps.txt": "a78b6c5a6415563e78dac0378318e9b88dc12de003579c5e9c578637209268d9",
    "diagnostics/test_paraphrase_other_caps.txt": "c213e4b44f365481c81a991db4289074384a75b4972f7bc852ae97b1bc3e66b1",
    "diagnostics/test_paraphrase_wordnet_caps.txt": "7276affdbfa1ab6423439d41af9a1ccbd929c7ef5ec2e8259d23d8c06ce12c62",
    # meta.json, which gains a key with each addition
    "meta.json": "88acb1faf33435da48e6ef0ac1173d28b9492687f0f6cc3715042cd5ec71534a",
}


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_tiny_seed0_files_match_the_pinned_sha256(tmp_path: Path) -> None:
    got = _digests(generate(tmp_path / "tiny", preset="tiny", seed=0))
    pinned = {**TINY_SEED0_SHA256, **ADDED_SHA256}
    assert sorted(got) == sorted(pinned), "the set of files written changed"
    changed = sorted(name for name, digest in pinned.items() if got[name] != digest)
    assert not changed, f"bytes changed (numpy {np.__version__}): {changed}"
