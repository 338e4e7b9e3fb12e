"""What `python -m harness --help` lists: the config groups a user picks from, with their options.

    python -m harness --help

The help text is Hydra's `hydra.help` template (conf/hydra/help/harness.yaml). Hydra's own
`$APP_CONFIG_GROUPS` lists every group it can find, internal ones too (`schema`: the typed schemas,
`base`: shared keys that config files include); `${harness_groups:}` lists only the groups that
conf/config.yaml's defaults list picks (model, task, optimizer, ...), each with its options.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

RESOLVER = "harness_groups"


def user_groups(choices: Any) -> list[str]:
    """The groups the primary config picks (hydra.runtime.choices without hydra/, schema@..., nested)."""
    return sorted(g for g in choices if "/" not in g and "@" not in g)


def _groups(*, _root_: Any) -> str:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    choices = _root_.hydra.runtime.choices
    return "\n".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}   (picked: {choices[g]})"
                     for g in user_groups(choices))


def register() -> None:
    """Register `${harness_groups:}` (before Hydra prints the help)."""
    OmegaConf.register_new_resolver(RESOLVER, _groups, replace=True)
