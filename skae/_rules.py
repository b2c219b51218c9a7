"""The registry of sparsity kinds: how estimators build a rule and its layer.

A kind names a rule of :mod:`skae._engine.rules`, the estimator parameters
it reads (with their ranges) and how a one-layer autoencoder with it starts.
The one-layer estimators build their module through their kind, and the
stacked and convolutional estimators build every layer of any registered
kind they accept, so a new rule reaches them through one :func:`register`
call here (see the developer guide's recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval

from ._engine.modules import LinearAutoencoder, tied_init, uniform_init
from ._engine.rules import L0, L1, L2, Rule, TargetActivation, TopK, WinnerTakeAll

#: Builds a layer: (rule, n_inputs, width, mean, generator, settings).
LayerMaker = Callable[..., LinearAutoencoder]


@dataclass(frozen=True)
class Kind:
    """A sparsity kind as the estimators see it.

    Parameters
    ----------
    name : str
        The value of an estimator's ``sparsity`` parameter that selects it.
    parameters : dict of str to Interval
        The estimator parameters the rule is made from, each with its range;
        the stacked estimator takes each one per layer.
    make_rule : callable
        The rule, from a mapping of parameter names to values that holds at
        least ``parameters``.
    make_layer : callable or None
        ``make_layer(rule, n_inputs, width, mean, generator, settings)``, a
        one-layer module for the rule; None for a kind that only the
        convolutional estimator uses.
    settings : tuple of str
        Module attributes taken from the settings of the same name when the
        module is built, and again when a fitted one trains on.
    start : tuple of str
        Settings that only the module's construction reads.
    """

    name: str
    parameters: dict[str, Interval]
    make_rule: Callable[[Mapping], Rule]
    make_layer: LayerMaker | None = None
    settings: tuple[str, ...] = field(default=())
    start: tuple[str, ...] = field(default=())

    def rule(self, values: Mapping) -> Rule:
        return self.make_rule(values)

    def layer(
        self,
        rule: Rule,
        n_inputs: int,
        width: int,
        mean: torch.Tensor,
        generator: torch.Generator,
        settings: Mapping,
    ) -> LinearAutoencoder:
        used = {name: settings[name] for name in (*self.settings, *self.start)}
        return self.make_layer(rule, n_inputs, width, mean, generator, **used)

    def update(self, module: LinearAutoencoder, rule: Rule, settings: Mapping) -> None:
        """Give a built ``module`` the rule and settings of changed parameters."""
        module.rule = rule
        for name in self.settings:
            setattr(module, name, settings[name])


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry under its name."""
    KINDS[kind.name] = kind
    return kind


def tied_layer(*, unit_norm_atoms: bool) -> LayerMaker:
    """Layers that start from :func:`tied_init` with the input mean as
    decoder bias, atoms kept at unit norm or not."""

    def make(rule, n_inputs, width, mean, generator, **settings):
        weights = tied_init(mean, width, generator)
        return LinearAutoencoder(
            weights, rule, unit_norm_atoms=unit_norm_atoms, **settings
        )

    return make


def sigmoid_layer(
    rule, n_inputs, width, mean, generator, *, output_activation, weight_decay
) -> LinearAutoencoder:
    """The CS294A layer: uniform weights, sigmoid codes of the raw input,
    weight decay; the input mean as decoder bias for a linear output."""
    weights = uniform_init(n_inputs, width, generator, rho=rule.rho)
    if output_activation == "identity":
        weights = weights._replace(b_dec=mean.float())
    return LinearAutoencoder(
        weights,
        rule,
        unit_norm_atoms=False,
        center_input=False,
        output_activation=output_activation,
        weight_decay=weight_decay,
    )


_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_NON_NEGATIVE = Interval(Real, 0, None, closed="left")
_OPEN_UNIT = Interval(Real, 0, 1, closed="neither")

register(
    Kind(
        "topk",
        {"k": _POSITIVE_INT},
        lambda p: TopK(int(p["k"])),
        tied_layer(unit_norm_atoms=True),
    )
)
register(
    Kind(
        "l1",
        {"alpha": _NON_NEGATIVE},
        lambda p: L1(float(p["alpha"])),
        tied_layer(unit_norm_atoms=False),
    )
)
register(
    Kind(
        "l2",
        {"alpha": _NON_NEGATIVE},
        lambda p: L2(float(p["alpha"])),
        tied_layer(unit_norm_atoms=False),
    )
)
register(
    Kind(
        "kl",
        {"sparsity_target": _OPEN_UNIT, "sparsity_weight": _NON_NEGATIVE},
        lambda p: TargetActivation(
            float(p["sparsity_target"]),
            float(p["sparsity_weight"]),
            p.get("sparsity_loss", "kl"),
        ),
        sigmoid_layer,
        settings=("output_activation", "weight_decay"),
    )
)
register(
    Kind(
        "jumprelu",
        {"sparsity_weight": _NON_NEGATIVE, "bandwidth": _NON_NEGATIVE},
        lambda p: L0(float(p["sparsity_weight"]), float(p["bandwidth"])),
        tied_layer(unit_norm_atoms=True),
        start=("initial_threshold",),
    )
)
register(
    Kind(
        "wta",
        {"k": _POSITIVE_INT, "lifetime_sparsity": Interval(Real, 0, 1, closed="right")},
        lambda p: WinnerTakeAll(int(p["k"]), float(p["lifetime_sparsity"])),
    )
)
