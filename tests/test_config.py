"""params.yaml and `ganops profile` against hostile input: one line naming file and key, exit 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ganops import config as C
from ganops import params as P
from ganops.config import ConfigError
from ganops.params import load_section
from ganops.profiles import SECTIONS
from pipelines.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def one_line_exit_2(res, *needles: str) -> str:
    """The command refused with exit 2 and a single line holding every needle (no traceback)."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in lines[0], res.output
    return lines[0]


# ---------------------------------------------------------------- the params file itself

BAD_FILES = {
    "not utf-8": (b"seed: 1\ndata:\n  path: /data/caf\xe9\n", "not UTF-8"),
    "integer key": (b"seed: 1\n1: x\n", "key 1 on line 2 is not a string"),
    "null key": (b"seed: 1\njudge:\n  null: 3\n", "key null on line 3 is not a string"),
    "yes/no key": (b"judge:\n  on: 3\n", "key on on line 2 is not a string"),
    "list key": (b"seed: 1\n? [a, b]\n: 1\n", "key [a, b] on line 2 is not a string"),
    "section twice": (b"judge:\n  epochs: 1\nseed: 1\njudge:\n  epochs: 9\n",
                      "key 'judge' on line 4 is written twice (first on line 1)"),
    "key twice": (b"judge:\n  width: 8\n  epochs: 1\n  width: 64\n", "key 'width' on line 4 is written twice"),
    "key twice in an untouched section": (b"judge: {}\ntrain:\n  epochs: 1\n  epochs: 2\n", "written twice"),
    "top level a list": (b"- judge\n", "expected a mapping of sections"),
    "section a list": (b"judge: [1, 2]\n", "section 'judge' must be a mapping"),
    "section a number": (b"judge: 3\n", "section 'judge' must be a mapping"),
    "unknown section": (b"seed: 1\njudeg:\n  epochs: 1\n", "unknown section 'judeg'"),
    "nested too deep": (b"judge: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    "int past python's str limit": (b"judge:\n  width: " + b"9" * 5000 + b"\n", "not valid YAML (Exceeds the limit"),
    "impossible date": (b"judge:\n  width: 2001-02-30\n", "not valid YAML (day is out of range for month)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_malformed_params_file_is_one_line_naming_it_exit_2(tmp_path: Path, case: str) -> None:
    text, needle = BAD_FILES[case]
    params = tmp_path / "bad-params.yaml"
    params.write_bytes(text)
    res = runner.invoke(app, ["judge", "--params", str(params), "--data", str(tmp_path / "none")])
    one_line_exit_2(res, "bad-params.yaml", needle)


# ---------------------------------------------------------------- values: types, sizes, seeds

HOSTILE_VALUES = [
    ("judge", "width", 10**7), ("model", "g_width", 10**6), ("model", "latent_dim", 10**9),
    ("pretrain", "batch_size", 10**9), ("train", "batch_size", 2**40), ("judge", "batch_size", 10**12),
    ("evaluate", "batch_size", 10**9), ("pretrain", "epochs", 10**9), ("train", "epochs", 10**12),
    ("judge", "epochs", 10**9), ("evaluate", "num_samples", 10**12), ("evaluate", "judge_samples", 10**12),
    ("evaluate", "grid_size", 10**9), ("train", "n_eval", 10**12), ("train", "log_every", 10**30),
    ("pretrain", "log_every", 10**30), ("train", "max_steps", 10**30), ("train", "d_steps", 10**9),
    ("train", "num_threads", 10**7), ("data", "limit", 10**30),
    ("train", "gp_weight", 1e300), ("train", "r1_weight", 1e300), ("pretrain", "kl_weight", 1e300),
    ("promote", "max_fid", 10**400),  # an integer too big for a float: was an OverflowError
    ("evaluate", "metrics", [["fid"]]),  # list of lists: was an unhashable-type TypeError
    ("promote", "model_name", "gen\x00erator"), ("tracking", "experiment", "a\nb"),
    ("train", "seed", -1), ("judge", "seed", 2**64), ("data", "seed", 2**63), ("evaluate", "seed", True),
]


@pytest.mark.parametrize(("section", "key", "value"), HOSTILE_VALUES, ids=lambda v: str(v)[:12])
def test_out_of_range_values_are_refused_naming_section_and_key(tmp_path: Path, section: str, key: str,
                                                                 value: object) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError) as e:
        load_section(params, section, SECTIONS[section])
    assert str(e.value).startswith(f"{params}: {section}.{key}:"), e.value
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, "abc", 1.5])
def test_a_top_level_seed_outside_what_numpy_and_torch_take_is_refused_as_seed(tmp_path: Path, seed: object) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": seed, "judge": {"epochs": 1}}))
    res = runner.invoke(app, ["judge", "--params", str(params), "--data", str(tmp_path / "none")])
    one_line_exit_2(res, f"{params}: seed: must be an integer in 0..2**63-1")


def test_the_largest_seed_is_accepted_by_every_rng_that_takes_it() -> None:
    import numpy as np
    import torch

    assert C.DataConfig(seed=C.SEED_MAX).seed == C.SEED_MAX
    np.random.default_rng(C.SEED_MAX)
    torch.manual_seed(C.SEED_MAX + 10_000)  # DistributedSampler seeds with seed + epoch
    torch.Generator().manual_seed(C.SEED_MAX)


def test_the_shipped_params_and_profiles_stay_within_the_bounds(tmp_path: Path) -> None:
    for path in [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))]:
        raw = P.read_params(path)
        for name, cls in C.SECTIONS.items():
            P.section_of(raw, name, cls, str(path))


# ---------------------------------------------------------------- one source of defaults

def test_params_yaml_states_every_field_with_its_dataclass_default() -> None:
    """The dataclass defaults are the default recipe: deleting a line from params.yaml must change nothing, and the
    file documents the whole recipe. `seed` is the file's one top-level key every section takes (section_of)."""
    import dataclasses

    raw = P.read_params(REPO / "params.yaml")
    assert set(raw) == {"seed", *C.SECTIONS}
    for name, cls in C.SECTIONS.items():
        written = dict(raw[name])
        for f in dataclasses.fields(cls):
            if f.name == "seed":
                assert f.name not in written, f"{name}.seed: the top-level seed is the recipe's one seed"
                assert f.default == raw["seed"], f"{name}.seed defaults to {f.default}, params.yaml says {raw['seed']}"
                continue
            assert f.name in written, f"params.yaml lacks {name}.{f.name} (default {f.default!r})"
            value = written.pop(f.name)
            assert (tuple(value) if isinstance(value, list) else value) == f.default, \
                f"{name}.{f.name}: params.yaml {value!r}, dataclass default {f.default!r}"
        assert not written, f"{name}: keys the dataclass lacks: {sorted(written)}"
        # and the loaded section is exactly the dataclass built from its defaults (the seed aside)
        loaded = P.section_of(raw, name, cls, "params.yaml")
        fields = {f.name for f in dataclasses.fields(cls)}
        assert loaded == cls(**({"seed": raw["seed"]} if "seed" in fields else {}))


def test_every_model_field_says_what_a_checkpoint_that_predates_it_meant() -> None:
    import dataclasses

    fields = [f.name for f in dataclasses.fields(C.ModelConfig)]
    assert sorted(fields) == sorted([*C.MODEL_FIELDS_FROM_THE_START, *C.MODEL_FIELDS_ADDED_LATER])
    first = {k: getattr(C.ModelConfig(), k) for k in C.MODEL_FIELDS_FROM_THE_START}
    old = C.ModelConfig.of_checkpoint({**first, "conditional": False, "spectral_norm": False})
    # a file written before d_hidden etc. existed is the plain DCGAN of its time, not today's recipe (d_hidden 1024)
    assert (old.depth, old.d_hidden, old.g_cond_bn, old.g_upsample) == (0, 0, False, "convt")
    assert old.d_hidden != C.ModelConfig().d_hidden
    full = dataclasses.asdict(C.ModelConfig(depth=1, g_upsample="nearest"))
    assert C.ModelConfig.of_checkpoint(full) == C.ModelConfig(depth=1, g_upsample="nearest")
    with pytest.raises(ValueError, match="model section lacks conditional"):
        C.ModelConfig.of_checkpoint({k: v for k, v in first.items() if k != "conditional"})


# ---------------------------------------------------------------- ganops profile -S

BAD_SETS = [
    ("train.epochs=-1", "--set: train.epochs: must be >= 0 and <= 10000, got -1"),
    ("model.g_width=abc", "--set: model.g_width: must be an integer, got 'abc'"),
    ("nosuch.key=1", "--set: unknown section 'nosuch'"),
    ("seed=abc", "--set: seed: must be an integer"),
    ("seed=-1", "--set: seed: must be an integer in 0.."),
    ("train=5", "--set: section 'train' must be a mapping"),
    ("train.epochs=[1", "--set 'train.epochs=[1': not valid YAML"),
    ("train..epochs=1", "expected section.key=value"),
    ("judge.width=100000000", "--set: judge.width: must be >= 1 and <= 1024"),
    ("train={epochs: 1, epochs: 2}", "written twice"),
    ("evaluate.metrics=[[fid]]", "--set: evaluate.metrics: must be a list of strings"),
]


@pytest.mark.parametrize(("item", "needle"), BAD_SETS, ids=[s for s, _ in BAD_SETS])
def test_profile_set_values_that_make_an_invalid_params_file_leave_it_byte_identical(tmp_path: Path, item: str,
                                                                                     needle: str) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_bytes()
    res = runner.invoke(app, ["profile", "--params", str(params), "-S", "train.epochs=3", "-S", item])
    one_line_exit_2(res, needle)
    assert params.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"], "temp file left behind"


def test_profile_refuses_when_the_result_is_invalid_in_a_section_it_does_not_touch(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 1, "judge": {"width": 10**9}, "train": {"epochs": 2}}))
    before = params.read_bytes()
    res = runner.invoke(app, ["profile", "--params", str(params), "-S", "train.epochs=3"])
    one_line_exit_2(res, f"{params}: judge.width: must be >= 1 and <= 1024")
    assert params.read_bytes() == before


def test_a_profile_file_with_a_section_twice_is_refused_naming_it(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_bytes()
    prof = tmp_path / "prof.yaml"
    prof.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 100\n")
    res = runner.invoke(app, ["profile", str(prof), "--params", str(params)])
    one_line_exit_2(res, "prof.yaml", "key 'train' on line 3 is written twice")
    assert params.read_bytes() == before


def test_profile_set_writes_a_valid_merge(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    res = runner.invoke(app, ["profile", "--params", str(params), "-S", "train.epochs=3", "-S", "seed=7"])
    assert res.exit_code == 0, res.output
    merged = P.read_params(params)
    assert merged["train"]["epochs"] == 3 and merged["seed"] == 7
    assert load_section(params, "train", C.TrainConfig).seed == 7


def test_profile_with_nothing_to_change_keeps_params_byte_identical_with_its_comments(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_bytes()
    for args in ([], ["-S", f"train.epochs={P.read_params(params)['train']['epochs']}"]):
        res = runner.invoke(app, ["profile", "--params", str(params), *args])
        assert res.exit_code == 0, res.output
        assert params.read_bytes() == before


# ---- vocabularies that live with their implementation (losses, metric kinds, data sources) -------------

def test_a_vocabulary_passed_as_choices_is_checked_on_load(tmp_path: Path) -> None:
    from ganops.data.sources import SOURCES
    from ganops.losses import GAN_LOSSES
    from ganops.metrics.names import metric_kinds

    p = tmp_path / "params.yaml"
    p.write_text("data:\n  source: imagenet\ntrain:\n  loss: wasserstein\nevaluate:\n  metrics: [fid, fad]\n")
    cases = [("data", C.DataConfig, {"source": SOURCES}, f"data.source: must be one of {', '.join(SOURCES)}, "
              "got 'imagenet'"),
             ("train", C.TrainConfig, {"loss": GAN_LOSSES}, f"train.loss: must be one of {', '.join(GAN_LOSSES)}, "
              "got 'wasserstein'"),
             ("evaluate", C.EvaluateConfig, {"metrics": metric_kinds()},
              f"evaluate.metrics: must be a list of {', '.join(metric_kinds())}, got 'fad'")]
    for section, cls, choices, message in cases:
        with pytest.raises(ConfigError) as e:
            load_section(p, section, cls, choices=choices)
        assert str(e.value) == f"{p}: {message}"
        # a stage that does not use the vocabulary loads the section without importing its implementation
        assert load_section(p, section, cls) is not None


def test_a_newly_registered_metric_kind_is_accepted_by_the_stages_that_compute_metrics(tmp_path: Path) -> None:
    """names.KINDS is the one list: naming a kind there (and registering its function) is all `evaluate.metrics`
    needs to accept it."""
    from ganops.metrics import names, registry

    p = tmp_path / "params.yaml"
    p.write_text("evaluate:\n  metrics: [fid, meannorm]\n")
    with pytest.raises(ConfigError, match="got 'meannorm'"):
        load_section(p, "evaluate", C.EvaluateConfig, choices={"metrics": names.metric_kinds()})

    with pytest.MonkeyPatch.context() as mp:  # a kind is named in names.KINDS and registered with its function
        mp.setattr(names, "KINDS", (*names.KINDS, "meannorm"))

        @registry.register_metric()
        def meannorm(opts: registry.MetricOpts) -> dict[str, float]:
            return {opts.name: float(abs(opts.gen_feats).mean())}

        try:
            cfg = load_section(p, "evaluate", C.EvaluateConfig, choices={"metrics": names.metric_kinds()})
            assert cfg.metrics == ("fid", "meannorm") and names.MetricName.parse("meannorm2k") == (
                names.MetricName("meannorm", 2000))
        finally:
            registry._metrics.pop("meannorm")
    assert "meannorm" not in names.metric_kinds()


@pytest.mark.parametrize("stage, section, bad, needle", [
    ("prepare", "data", {"source": "imagenet"}, "data.source: must be one of fashion-mnist"),
    ("train", "train", {"loss": "wasserstein"}, "train.loss: must be one of bce"),
    ("reference", "evaluate", {"metrics": ["fid", "fad"]}, "evaluate.metrics: must be a list of fid"),
    ("floor", "evaluate", {"metrics": ["fid", "fad"]}, "evaluate.metrics: must be a list of fid"),
    ("evaluate", "evaluate", {"metrics": ["fid", "fad"]}, "evaluate.metrics: must be a list of fid"),
])
def test_each_stage_refuses_a_name_its_vocabulary_lacks_before_any_work(tmp_path: Path, monkeypatch, stage: str,
                                                                        section: str, bad: dict, needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw[section] = {**(raw.get(section) or {}), **bad}
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, [stage, "--params", "params.yaml"])
    assert res.exit_code == 2 and needle in res.output and "params.yaml" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written, no store created
