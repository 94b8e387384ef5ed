"""The organism: world determinism, ground truth vs corpus, tokenizer, tiny pipeline, committed assets."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from core.organism.structure import analogy_parallelism, circle_report
from core.organism.tokenizer import build_tokenizer, save_tokenizer
from core.organism.train import log_spaced_steps, sha256_of
from core.organism.world import (
    WEEKDAYS,
    WorldConfig,
    build_world,
    ground_truth,
)
from core.sources import organism as loading
from core.sources.organism import (
    ORGANISM_DIR,
    OrganismError,
    checkpoint_steps,
    list_checkpoints,
    load_ground_truth,
    load_organism,
    load_organism_tokenizer,
    organism_sae_dirs,
    world_corpus_texts,
)


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=0))


def _concept_words(truth: dict) -> set[str]:
    words = set(truth["cyclic"]["weekdays"]) | set(truth["cyclic"]["months"]) | set(truth["numbers"])
    words |= set(truth["cities"]) | set(truth["people"]) | set(truth["years"])
    for kingdom, categories in truth["taxonomy"].items():
        words.add(kingdom)
        for category, species in categories.items():
            words |= {category, *species}
    for pairs in truth["analogies"].values():
        for pair in pairs:
            words |= set(pair)
    for table in truth["properties"].values():
        words |= set(table.values())
    return words


# ---------------------------------------------------------------- world


def test_same_seed_same_world_and_corpus():
    a, b = build_world(WorldConfig(seed=3)), build_world(WorldConfig(seed=3))
    assert a.documents(50, seed=7) == b.documents(50, seed=7)
    assert json.dumps(ground_truth(a), sort_keys=True) == json.dumps(ground_truth(b), sort_keys=True)


def test_different_seed_changes_split_and_people():
    a, b = ground_truth(build_world(WorldConfig(seed=1))), ground_truth(build_world(WorldConfig(seed=2)))
    assert a["eval_facts"]["held_out"] != b["eval_facts"]["held_out"]
    assert a["people"] != b["people"]


def test_every_concept_word_is_one_token(world):
    vocab = set(world.vocabulary())
    missing = _concept_words(ground_truth(world)) - vocab
    assert not missing
    assert all(" " not in word for word in vocab)


def test_held_out_facts_never_appear_in_training_text(world):
    held = world.held_out_sentences()
    assert held and all(world.held_out_facts[family] for family in world.held_out_facts)
    docs = world.documents(3000, seed=11)
    sentences = {s.strip() for doc in docs for s in doc.split(" .")}
    assert not held & sentences
    # ... and the training facts do appear (the check above is not vacuous).
    train = {f.sentence for facts in world.train_facts.values() for f in facts}
    assert len(train & sentences) > 500


def test_held_out_pairs_are_unordered(world):
    # "of a and b" held out means "of b and a" is held out too, so order cannot leak the answer.
    held = {tuple(sorted((f.prompt.split()[1], f.prompt.split()[3]))) for f in world.held_out_facts["people_order"]}
    train = {tuple(sorted((f.prompt.split()[1], f.prompt.split()[3]))) for f in world.train_facts["people_order"]}
    assert held and not held & train


def test_ground_truth_answers_are_correct(world):
    truth = ground_truth(world)
    facts = truth["eval_facts"]["held_out"] | {}
    for prompt, answer in facts["weekday_arith"] + truth["eval_facts"]["train"]["weekday_arith"]:
        n, unit, direction, day = prompt.split()[:4]
        k = truth["numbers"].index(n)
        sign = 1 if direction == "after" else -1
        assert answer == WEEKDAYS[(WEEKDAYS.index(day) + sign * k) % 7]
    for prompt, answer in facts["people_order"]:
        a, b = prompt.split()[1], prompt.split()[3]
        assert answer == min((a, b), key=truth["people"].get)
    for prompt, answer in facts["city_direction"]:
        a, b = prompt.split()[2], prompt.split()[4]
        (ax, ay), (bx, by) = truth["cities"][a], truth["cities"][b]
        expected = ("east" if bx > ax else "west") if abs(bx - ax) >= abs(by - ay) else ("north" if by > ay else "south")
        assert answer == expected


def test_cyclic_pairs_fall_with_distance(world):
    # The co-occurrence lever: two-weekday sentences are more frequent at cyclic distance 1 than 3.
    import random

    rng = random.Random(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(20000):
        words = [w for w in world.sample_sentence(rng).split() if w in WEEKDAYS]
        if len(words) == 2:
            d = (WEEKDAYS.index(words[1]) - WEEKDAYS.index(words[0])) % 7
            counts[min(d, 7 - d)] += 1
    assert counts[1] > 1.5 * counts[2] > 1.5 * 1.5 * counts[3] > 0


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_unk(tmp_path, world):
    tokenizer = build_tokenizer(world.vocabulary())
    save_tokenizer(tokenizer, tmp_path)
    loaded = load_organism_tokenizer(tmp_path)
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "three days after friday is monday ."
    for tok in (loaded, auto):
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and len(ids) == 1 + len(text.split())
        assert tok.decode(ids[1:]) == text
    ids = loaded("monday is zorblax").input_ids
    assert ids[-1] == loaded.unk_token_id and loaded.convert_ids_to_tokens(ids[-1]) == "<unk>"
    assert {loaded.pad_token, loaded.bos_token, loaded.unk_token} == {"<pad>", "<bos>", "<unk>"}


# ---------------------------------------------------------------- structure metrics (known answers)


def test_fourier_shares_find_planted_circle():
    k, rng = 12, np.random.default_rng(0)
    angles = 2 * np.pi * 5 * np.arange(k) / k  # a frequency-5 circle (step 5 around it)
    basis = rng.normal(size=(2, 16))
    vectors = np.stack([np.cos(angles), np.sin(angles)], 1) @ basis
    report = circle_report(vectors)
    shares = report["shares"]  # from core.metrics.circles.fourier_shares, keyed by frequency
    assert list(shares) == ["1", "2", "3", "4", "5", "6"]
    assert shares["5"] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)
    assert report["best_coprime_frequency"] == 5 and report["neighbour_consistency"] == 1.0
    assert report["neighbour_step"] == 5  # 5 * 5 = 25 = 1 (mod 12): neighbours are 5 apart
    calendar = circle_report(np.stack([np.cos(2 * np.pi * np.arange(7) / 7), np.sin(2 * np.pi * np.arange(7) / 7)], 1))
    assert calendar["best_coprime_frequency"] == 1 and calendar["neighbour_step"] == 1


def test_angular_visit_order_steps_by_the_inverse_frequency():
    from core.metrics.circles import angular_visit_order

    k, f = 7, 3  # a frequency-3 weekday circle: angular neighbours are 3^-1 = 5 (mod 7) days apart
    angles = 2 * np.pi * f * np.arange(k) / k
    order, steps = angular_visit_order(np.stack([np.cos(angles), np.sin(angles)], 1))
    assert order[0] == 0 and sorted(order.tolist()) == list(range(k))
    assert set(steps.tolist()) == {5}
    report = circle_report(np.stack([np.cos(angles), np.sin(angles)], 1) @ np.random.default_rng(2).normal(size=(2, 8)))
    assert report["best_coprime_frequency"] == 3 and report["neighbour_step"] == 2  # min(5, 7 - 5)
    assert report["neighbour_consistency"] == 1.0


def test_analogy_parallelism_planted():
    rng = np.random.default_rng(1)
    directions = {"g": rng.normal(size=8), "t": rng.normal(size=8)}
    vocab, rows, analogies = {}, [], {"g": [], "t": []}
    for family, direction in directions.items():
        for i in range(4):
            base = rng.normal(size=8)
            for word, vec in ((f"{family}{i}a", base), (f"{family}{i}b", base + 3 * direction)):
                vocab[word] = len(rows)
                rows.append(vec)
            analogies[family].append([f"{family}{i}a", f"{family}{i}b"])
    result = analogy_parallelism(np.array(rows), vocab, analogies)
    assert result["within"] > 0.6 > abs(result["across"])


def test_log_spaced_steps():
    steps = log_spaced_steps(2800, 13)
    assert steps[0] == 0 and steps[-1] == 2800 and len(steps) >= 13 and steps == sorted(set(steps))
    with pytest.raises(ValueError):
        log_spaced_steps(5, 13)


# ---------------------------------------------------------------- tiny pipeline end to end


def test_tiny_pipeline_loads(tiny_organism_dir):
    model = load_organism(tiny_organism_dir)
    assert model.tokenizer is not None
    tokens = model.to_tokens("monday tuesday zorblax")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    assert tokens[0, -1].item() == model.tokenizer.unk_token_id
    assert model.to_str_tokens("monday tuesday")[1:] == ["monday", "tuesday"]
    assert model.to_string(tokens[0, 1:3]) == "monday tuesday"
    logits = model(tokens)
    assert logits.shape == (1, 4, model.cfg.d_vocab) and torch.isfinite(logits).all()


def test_tiny_checkpoints(tiny_organism_dir):
    names = list_checkpoints(tiny_organism_dir)
    steps = checkpoint_steps(tiny_organism_dir)
    assert names[0] == "step_000000" and names[-1] == "final" and len(names) >= 12
    assert list(steps.values()) == sorted(steps.values())
    first, final = load_organism(tiny_organism_dir, names[0]), load_organism(tiny_organism_dir, "final")
    assert not torch.allclose(first.W_E, final.W_E)
    with pytest.raises(OrganismError):
        load_organism(tiny_organism_dir, "step_999999")


def test_tiny_saes_load(tiny_organism_dir):
    from sae_lens import SAE

    model = load_organism(tiny_organism_dir)
    dirs = organism_sae_dirs(tiny_organism_dir)
    assert list(dirs) == [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    for hook_name, directory in dirs.items():
        sae = SAE.load_from_disk(str(directory))
        assert sae.cfg.metadata.hook_name == hook_name and sae.cfg.metadata.model_name == "atlas-organism"
        assert sae.cfg.d_in == model.cfg.d_model
        _, cache = model.run_with_cache("monday tuesday", names_filter=[hook_name])
        feats = sae.encode(cache[hook_name])
        assert ((feats > 0).sum(-1) <= sae.cfg.k).all()


def test_tiny_world_files(tiny_organism_dir):
    truth = load_ground_truth(tiny_organism_dir)
    vocab = load_organism(tiny_organism_dir).tokenizer.get_vocab()
    assert _concept_words(truth) <= set(vocab)
    assert world_corpus_texts(tiny_organism_dir, "eval") and world_corpus_texts(tiny_organism_dir, "train")
    with pytest.raises(OrganismError):
        world_corpus_texts(tiny_organism_dir, "test")
    manifest = json.loads((tiny_organism_dir / "manifest.json").read_text())
    assert set(manifest["metrics"]["accuracy"]["held_out"]) == set(truth["eval_facts"]["held_out"])


def test_tiny_card_and_structure(tiny_organism_dir):
    from core.organism.card import metrics_card, structure_card
    from core.organism.structure import structure_report

    assert "| weekday_arith |" in metrics_card(tiny_organism_dir)
    report = structure_report(tiny_organism_dir)
    assert set(report) == {"resid_0", "resid_1", "embed", "unembed", "answer_0", "answer_1"}
    for entry in report.values():
        assert sum(float(v) for v in entry["months"]["shares"].values()) == pytest.approx(1.0, abs=0.01)
    assert "| resid_0 |" in structure_card(report)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(OrganismError, match="config.json"):
        load_organism(tmp_path)


# ---------------------------------------------------------------- committed assets


committed = pytest.mark.skipif(not (ORGANISM_DIR / "manifest.json").is_file(), reason="no committed organism")


@committed
def test_committed_assets_match_manifest():
    manifest = json.loads((ORGANISM_DIR / "manifest.json").read_text())
    on_disk = {str(p.relative_to(ORGANISM_DIR)) for p in ORGANISM_DIR.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(manifest["files"])
    for name, entry in manifest["files"].items():
        path = ORGANISM_DIR / name
        assert path.stat().st_size == entry["bytes"] and sha256_of(path) == entry["sha256"], name
    assert manifest["total_bytes"] <= 40 * 1024 * 1024


@committed
def test_committed_organism_loads_and_knows_its_world():
    from sae_lens import SAE

    model = load_organism()
    assert len(list_checkpoints()) >= 13
    assert len(organism_sae_dirs()) == model.cfg.n_layers
    SAE.load_from_disk(str(next(iter(organism_sae_dirs().values()))))
    # The trained model answers training facts it has seen (a random model would be near 0).
    from core.organism.evaluate import answer_accuracy

    facts = load_ground_truth()["eval_facts"]["train"]["month_arith"][:60]
    assert answer_accuracy(model, facts) > 0.5


def test_loading_reads_no_pickle():
    source = open(loading.__file__).read()
    assert "torch.load(" not in source and "import pickle" not in source and "pickle.load" not in source
