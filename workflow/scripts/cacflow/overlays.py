"""How the configuration files of a run overlay (standard library only: the Snakefile imports
it). Snakemake merges config.yaml and each --configfile key by key, nested sections too, so
a network's ``training.per_model`` entry from an earlier file would outlive a later file's
setting of the same key for every network; `per_model_after_overlays` gives the later file
the last word, as for any other key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def per_model_after_overlays(per_model: Mapping, layers: Sequence[Mapping]) -> dict:
    """`per_model` (the merged ``training.per_model``) less every network's key that a later
    config layer sets for the whole section. `layers` are the ``training:`` sections in the
    order they overlay (the schema's defaults, config.yaml, each --configfile): a later file
    wins, whether the earlier one set the key for one network or for all; in one file the
    network's own key wins. Snakemake's --config is no layer here: a per-network key only
    it gives stays, and a section key it gives does not override a file's per-network one."""
    kept = {}
    for model, keys in per_model.items():
        own = {}
        for key, value in keys.items():
            per_network = section = -1
            for i, layer in enumerate(layers):
                if key in ((layer.get("per_model") or {}).get(model) or {}):
                    per_network = i
                if key in layer:
                    section = i
            if per_network < 0 or per_network >= section:
                own[key] = value
        if own:
            kept[model] = own
    return kept
