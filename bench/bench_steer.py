"""Steering latency on the organism: one 20-token greedy completion with a feature added at an SAE's site,
against the unsteered completion of the same prompt, medians side by side.

    python -m bench steer [--tokens 20] [--repeats 10] [--layer 2]

Rows: the unsteered completion alone (Atlas's generation loop, no hook), `steer` (the unsteered and
the steered completion in one batch of 2, hook attached), a sweep of 4 strengths (batch of 5), and
TransformerLens's `generate` with its key-value cache (a reference: Atlas reruns the whole sequence
each step so hooks see absolute positions), and the Steer page's stored result of the same steer read back
(core.interventions.requests.run_request on an artifact store). Tests assert no timings; docs/INTERVENTIONS.md records runs.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import median_seconds, organism_sources


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--layer", type=int, default=2, help="which SAE (by position in the organism's list)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from core.interventions import steer
    from core.interventions.generation import generate_rows

    sources = organism_sources(args.device)
    model, sae = sources.model, sources.saes[min(args.layer, len(sources.saes) - 1)]
    vocab = model.tokenizer.get_vocab()
    prompt = "one month after january is" if "january" in vocab else " ".join(
        [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w.isalpha()][:6])
    tokens = model.tokenize_prompt(prompt).tokens
    n_new = min(args.tokens, model.n_ctx - tokens.shape[1])
    feature = int(sae.W_dec.norm(dim=-1).argmax())

    def plain():  # no early stop: the same number of steps as the steered rows at least
        return generate_rows(model, tokens, 1, sae.hook_name, None, max_new_tokens=n_new, temperature=0.0, seed=0,
                             stop_at_eos=False)

    def steered():
        return steer(model, sae, prompt, [(feature, 8.0)], max_new_tokens=n_new)

    def sweep():
        return steer(model, sae, prompt, [(feature, 8.0)], scales=[0.5, 1.0, 2.0, 4.0], max_new_tokens=n_new)

    def tl_generate():
        with model.lock, torch.inference_mode():
            return model.model.generate(tokens.to(model.device), max_new_tokens=n_new, do_sample=False,
                                        verbose=False, stop_at_eos=False)

    # The Steer page (core.interventions.requests): the same request, read back from the artifact store.
    import tempfile

    from core.interventions.requests import request_key, run_request, steering_request
    from core.store import ArtifactStore

    store = ArtifactStore(tempfile.mkdtemp(prefix="bench-steer-"))
    request = steering_request(model, sae, prompt=prompt, features=f"{feature}:8", max_new_tokens=n_new)
    key = request_key(model, request, sae_id="bench")
    run_request(store, key, request, model, sae)

    def read_back():
        return run_request(store, key, request, model, sae)

    result = steered()
    plain_s = median_seconds(plain, args.repeats, args.device)
    steer_s = median_seconds(steered, args.repeats, args.device)
    sweep_s = median_seconds(sweep, args.repeats, args.device)
    tl_s = median_seconds(tl_generate, args.repeats, args.device)
    read_s = median_seconds(read_back, args.repeats, args.device)
    print(f"{sources.label}; torch threads {torch.get_num_threads()}")
    print(f"prompt {prompt!r} ({tokens.shape[1]} tokens), {n_new} new tokens, feature {feature} of {sae.hook_name} x 8")
    print(f"  unsteered : {result.unsteered.text!r} ({len(result.unsteered.token_ids)} tokens)")
    print(f"  steered   : {result.steered[0].text!r} ({len(result.steered[0].token_ids)} tokens)")
    print(f"  unsteered completion (Atlas loop, no hook)   {plain_s * 1e3:8.1f} ms")
    print(f"  steer: unsteered + steered, batch of 2       {steer_s * 1e3:8.1f} ms   {steer_s / plain_s:5.2f}x")
    print(f"  sweep of 4 strengths + unsteered, batch of 5 {sweep_s * 1e3:8.1f} ms   {sweep_s / plain_s:5.2f}x")
    print(f"  TransformerLens generate (KV cache), ref.    {tl_s * 1e3:8.1f} ms   {tl_s / plain_s:5.2f}x")
    print(f"  Steer page: that steer read back from store  {read_s * 1e3:8.1f} ms   {read_s / plain_s:5.3f}x")


if __name__ == "__main__":
    main()
