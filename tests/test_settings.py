"""``isogauss_hf.settings``: the allowed rules and noise modes, the defaults, and the one-line checks."""

import pytest

from isogauss_hf import settings
from isogauss_hf.layers.updates import DISTRIBUTION_UPDATES


def test_every_rule_and_noise_pair_has_exactly_one_update():
    assert set(DISTRIBUTION_UPDATES) == {(r, n) for r in settings.RULES for n in settings.NOISE_MODES}


def test_the_documented_defaults():
    # measured best on the offline tasks (README, "Defaults"); the paper's method is --preset paper
    assert (settings.DEFAULT_RULE, settings.DEFAULT_NOISE, settings.DEFAULT_NUM_SAMPLES) == ("gdu", "seeded", 10)


@pytest.mark.parametrize("check, value, match", [
    (settings.check_rule, "gdw", "rule='gdw' is not valid; choose one of .*Did you mean 'gdu'"),
    (settings.check_noise, "fixed", "noise='fixed' is not valid; choose one of 'resample', 'seeded'"),
    (settings.check_std_floor, float("nan"), "std_floor must be a number >= 0"),
    (settings.check_std_floor, -1, "std_floor must be a number >= 0"),
])
def test_bad_values_are_one_clear_error(check, value, match):
    with pytest.raises(ValueError, match=match):
        check(value)


def test_layer_options_take_a_config_and_explicit_overrides():
    class Cfg:
        rule, noise, standardize, std_floor = "gdu", "seeded", False, 0.0

    opts = settings.LayerOptions.build(Cfg(), noise="resample")
    assert (opts.rule, opts.noise) == ("gdu", "resample")
    with pytest.raises(ValueError, match="standardize must be true or false"):
        settings.LayerOptions(standardize="yes")
