"""Cached feature data for the Features and Probe pages, one entry per harvest key and layer.

Everything here is computed once per (harvest key, hook) or (harvest key, hook, feature) and shared by
every browser session (st.cache_resource: the cached objects are never changed in place).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.resources import current_sources, decoder_weights, get_corpus
from core.contexts import token_cofiring, window_activations
from core.feature_views import feature_frame, unit_rows


@st.cache_resource(show_spinner=False, max_entries=64)
def _frame(harvest_key: str, hook: str, _stats, _model, center: int) -> pd.DataFrame:
    return feature_frame(_stats, _model.to_str_tokens, center)


def layer_frame(harvest_key: str, hook: str, stats, model, center: int) -> pd.DataFrame:
    """The feature table of one layer (core.feature_views.feature_frame); do not modify it (shared)."""
    return _frame(harvest_key, hook, stats, model, center)


@st.cache_resource(show_spinner=False, max_entries=32)
def _unit(identity: tuple[int, Any], _sae) -> np.ndarray:
    return unit_rows(decoder_weights(_sae))


def unit_decoder(sae) -> np.ndarray:
    """The SAE's decoder rows scaled to unit length (for cosines), once per loaded SAE."""
    return _unit((id(sae), sae.spec), sae)


def _windows(model, sae, settings: dict, feature: int, chunk, pos, centre_codes: bool):
    corpus = get_corpus(current_sources().corpus, current_sources().model)
    return window_activations(model, sae, corpus.tokens, chunk, pos, feature, left=int(settings["window_left"]),
                              right=int(settings["window_right"]), centre_codes=centre_codes)


@st.cache_resource(show_spinner=False, max_entries=128)
def _cofiring(harvest_key: str, hook: str, feature: int, _stats, _model, _sae, _settings, k: int):
    values = np.asarray(_stats.top_values[feature])
    codes = _windows(_model, _sae, _settings, feature, np.asarray(_stats.top_chunk[feature]),
                     np.asarray(_stats.top_pos[feature]), True).centre_codes
    return token_cofiring(codes, values, feature, k)


def centre_cofiring(harvest_key: str, harvest, sae, model, feature: int, k: int = 10) -> list[tuple[int, int, float]]:
    """Features that fire on the same tokens as `feature`'s top activations (core.contexts.token_cofiring)."""
    return _cofiring(harvest_key, sae.hook_name, int(feature), harvest.saes[sae.hook_name], model, sae,
                     harvest.settings, k)
