"""The one hook mechanism: hooks never outlive an intervention, the shared model comes back bit-identical
after a failure, and two threads' interventions do not mix (the per-model lock)."""

from __future__ import annotations

import threading

import pytest
import torch

from core.errors import UnknownHookError
from core.interventions import active_hook_count, forward_logits, intervene

SITE = "blocks.0.hook_resid_post"
TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def bridge_model(tiny_hf_dir):
    from core.sources.models import ModelSpec, load_model

    return load_model(ModelSpec(source="hf_dir", path=str(tiny_hf_dir), device="cpu"))


@pytest.fixture(params=["hooked", "bridge"])
def any_model(request, tiny_model):
    return tiny_model if request.param == "hooked" else request.getfixturevalue("bridge_model")


def _push(act, hook):
    return act + 5.0


def test_hooks_apply_inside_and_are_gone_after(any_model):
    tokens = any_model.to_tokens(TEXT)
    clean = any_model.logits(tokens)
    assert active_hook_count(any_model) == 0
    with intervene(any_model, [(SITE, _push)]):
        assert active_hook_count(any_model) == 1
        pushed = any_model.logits(tokens)
    assert active_hook_count(any_model) == 0
    assert not torch.allclose(pushed, clean)  # the hook really ran
    assert torch.equal(any_model.logits(tokens), clean)


class Boom(Exception):
    pass


def _raise(act, hook):
    raise Boom("inside the hook")


@pytest.mark.parametrize("failure", ["hook raises", "block raises", "keyboard interrupt", "generator closed"])
def test_failed_intervention_leaves_the_model_bit_identical(any_model, failure):
    tokens = any_model.to_tokens(TEXT)
    before = any_model.logits(tokens).clone()
    if failure == "hook raises":
        with pytest.raises(Boom):
            forward_logits(any_model, tokens, [(SITE, _push), ("blocks.1.hook_resid_pre", _raise)])
    elif failure == "block raises":
        with pytest.raises(Boom), intervene(any_model, [(SITE, _push)]):
            any_model.logits(tokens)
            raise Boom("inside the block")
    elif failure == "keyboard interrupt":
        with pytest.raises(KeyboardInterrupt), intervene(any_model, [(SITE, _push)]):
            raise KeyboardInterrupt
    else:
        def stream():
            with intervene(any_model, [(SITE, _push)]):
                for _ in range(3):
                    yield any_model.logits(tokens)

        steps = stream()
        next(steps)
        assert active_hook_count(any_model) == 1
        steps.close()  # GeneratorExit inside the with block
    assert active_hook_count(any_model) == 0
    assert torch.equal(any_model.logits(tokens), before)
    # the lock was released on the way out: another thread can take it at once
    grabbed = []
    worker = threading.Thread(target=lambda: grabbed.append(any_model.lock.acquire(timeout=2) and any_model.lock.release() is None))
    worker.start()
    worker.join()
    assert grabbed == [True]


def test_unknown_hook_name_is_an_error_and_attaches_nothing(any_model):
    hooks = [(SITE, _push), ("blocks.9.hook_resid_post", _push)]
    with pytest.raises(UnknownHookError, match="no hook site 'blocks.9.hook_resid_post'"), intervene(any_model, hooks):
        pass  # pragma: no cover
    assert active_hook_count(any_model) == 0


def test_nested_interventions_remove_only_their_own_hooks(tiny_model):
    tokens = tiny_model.to_tokens(TEXT)
    with intervene(tiny_model, [(SITE, _push)]):
        once = tiny_model.logits(tokens)
        with intervene(tiny_model, [(SITE, _push)]):
            assert active_hook_count(tiny_model) == 2
        assert active_hook_count(tiny_model) == 1
        assert torch.equal(tiny_model.logits(tokens), once)
    assert active_hook_count(tiny_model) == 0


def _race(model, wait_for_b: float):
    """Thread A runs an intervention and, holding it, waits for thread B's plain forward pass.

    Returns (B finished while A's hooks were attached, B's logits)."""
    tokens = model.to_tokens(TEXT)
    a_inside, b_done = threading.Event(), threading.Event()
    seen: dict[str, torch.Tensor] = {}

    def thread_a():
        with intervene(model, [(SITE, _push)]):
            a_inside.set()
            b_done.wait(timeout=wait_for_b)
            seen["b_done_while_a_inside"] = torch.tensor(b_done.is_set())

    def thread_b():
        a_inside.wait(timeout=10)
        seen["b"] = model.logits(tokens)
        b_done.set()

    workers = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    return bool(seen["b_done_while_a_inside"]), seen["b"]


def test_two_threads_do_not_mix(tiny_model):
    clean = tiny_model.logits(tiny_model.to_tokens(TEXT))
    overlapped, b_logits = _race(tiny_model, wait_for_b=1.0)
    assert not overlapped  # B had to wait for A's intervention to end
    assert torch.equal(b_logits, clean)


def test_without_the_lock_the_same_race_mixes(tiny_hooked):
    """The threaded test above can fail: with a lock that locks nothing, B runs through A's hook."""
    import contextlib

    from core.sources.models import ModelSpec, from_hooked_transformer

    unlocked = from_hooked_transformer(tiny_hooked, ModelSpec(source="organism", name="unlocked", device="cpu"))
    unlocked.lock = contextlib.nullcontext()
    clean = unlocked.logits(unlocked.to_tokens(TEXT))
    overlapped, b_logits = _race(unlocked, wait_for_b=20.0)
    assert overlapped
    assert not torch.allclose(b_logits, clean)
    assert active_hook_count(unlocked) == 0
