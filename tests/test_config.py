import pytest

from sslbench.bench.core.config import RunConfig
from sslbench.bench.core.overrides import build_config, parse_set_args, with_overrides
from sslbench.bench.core.profiles import apply_profile, get_profile
from sslbench.bench.errors import ConfigError


def test_quick_profile_scales_epoch_lengths():
    config = build_config("temporal_ensembling", 0, "quick")
    assert config.train.epochs == 30
    assert config.method.ramp_epochs == 8  # 80 of 300 -> 8 of 30
    fast = build_config("temporal_ensembling", 0, "quick",
                        variant_overrides={"method.ramp_epochs": 20})
    assert fast.method.ramp_epochs == 2


def test_paper_profile_is_the_blog_protocol():
    config = build_config("temporal_ensembling", 0, "paper")
    assert (config.train.epochs, config.train.batch_size, config.train.lr) == (300, 100, 0.002)
    assert (config.train.beta1, config.train.beta2) == (0.9, 0.99)
    assert config.method.ramp_epochs == 80 and config.method.w_max == 30.0
    assert config.method.options.ensemble_momentum == 0.6
    assert config.data.normalization == "channelwise" and config.data.train_size is None


def test_methods_bring_their_own_defaults_below_grid_and_set():
    assert build_config("pi_model", 0, "quick").method.w_max == 100.0
    assert build_config("temporal_ensembling", 0, "quick").method.w_max == 30.0
    assert build_config("pi_model", 0, "quick", {"method.w_max": "50"}).method.w_max == 50.0


def test_set_overrides_are_typed_and_applied_after_the_profile():
    config = build_config("supervised", 3, "quick",
                          parse_set_args(["train.lr=0.001", "method.ramp_epochs=5",
                                          "model.weight_norm=false", "data.train_size=none"]))
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert config.method.ramp_epochs == 5  # not scaled: --set is absolute
    assert config.model.weight_norm is False
    assert config.data.train_size is None


@pytest.mark.parametrize("overrides, message", [
    ({"train.nope": "1"}, "unknown config key 'train.nope'"),
    ({"nope": "1"}, "unknown config key 'nope'"),
    ({"train.epochs": "ten"}, "train.epochs must be an integer"),
    ({"train.lr": "fast"}, "train.lr must be a number"),
    ({"model.weight_norm": "maybe"}, "model.weight_norm must be true or false"),
    ({"data.normalization": "global"}, "data.normalization must be one of channelwise, pixelwise"),
    ({"train.epochs": "-1"}, "train.epochs must be > 0"),
    ({"train.batch_size": "0"}, "train.batch_size must be > 0"),
    ({"method.ensemble_momentum": "1.0"}, "method.ensemble_momentum must be in [0, 1)"),
    ({"train.precision": "fp16"}, "train.precision must be one of fp32, bf16, auto"),
    ({"method.name": "mixmatch"}, "unknown method 'mixmatch'"),
])
def test_bad_overrides_say_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError) as caught:
        with_overrides(RunConfig(), overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_malformed_set_and_unknown_profile():
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_args(["train.lr"])
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        get_profile("huge")


def test_hash_is_stable_and_tracks_every_value():
    a = build_config("temporal_ensembling", 0, "quick")
    assert a.config_hash() == build_config("temporal_ensembling", 0, "quick").config_hash()
    assert a.config_hash() != with_overrides(a, {"seed": 1}).config_hash()
    assert a.config_hash() != with_overrides(a, {"method.ensemble_target": "prob"}).config_hash()
    paper = build_config("temporal_ensembling", 0, "paper")
    assert apply_profile(paper, get_profile("quick")) == a  # profiles map paper units


def test_fields_added_later_keep_existing_run_ids():
    """A run id written before train.precision, train.compile and train.cuda_graphs existed
    (the hash of the config without them) is still the id of the same computation; any other
    value of them is another run."""
    import hashlib
    import json

    from sslbench.bench.core.legacy import LATER_FIELDS, LEGACY_METHOD_KEYS

    config = build_config("temporal_ensembling", 3, "quick")
    before = config.to_dict()
    # Then, every method section held every method's knobs (mean teacher's at defaults).
    before["method"] = {**LEGACY_METHOD_KEYS, **before["method"]}
    for section, name in LATER_FIELDS:
        del before[section][name]
    old_id = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":"))
                            .encode()).hexdigest()[:16]
    assert config.config_hash() == old_id == "e0d1ab21f4143aaa"  # computed at commit ca451da
    for key, value in (("train.precision", "bf16"), ("train.precision", "auto"),
                       ("train.compile", True), ("train.cuda_graphs", True)):
        assert with_overrides(config, {key: value}).config_hash() != old_id, key


def test_every_committed_record_keeps_its_run_id():
    """The golden check over real stores: every record committed under reports/results reads
    back (methods own their knobs now) and hashes to the run id it was stored under."""
    from pathlib import Path

    from sslbench.bench.store.identity import stored_run_id
    from sslbench.bench.store.opening import open_storage

    results = Path(__file__).resolve().parent.parent / "reports" / "results"
    urls = [f"sqlite:///{p}" for p in sorted(results.glob("*/*.db"))]
    urls += [f"journal:///{p}" for p in sorted(results.glob("*/*.log"))
             if p.name in ("runs.log", "search.log")]
    checked = []
    for url in urls:
        storage = open_storage(url, create=False)
        for study in storage.get_all_studies():
            for trial in storage.get_all_trials(study._study_id):
                record = trial.user_attrs.get("record")
                if record:
                    checked.append((url, trial.number, record["run_id"],
                                    stored_run_id(record["config"])))
    assert len(checked) > 150 and {url for url, *_ in checked} == set(urls)
    assert [c for c in checked if c[2] != c[3]] == []
