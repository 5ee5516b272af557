"""Hostile figures and files never promote: every metric the gate reads, of the candidate and of the
champion, must be a finite number in its valid range, and `models/candidate.json` must have the shape
`ganops evaluate` writes; else `ganops promote` says so in one line and exits 2, the champion untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from ganops.errors import GanopsError
from ganops.gate import KID_NEG_SIGMAS, VersionRecord, should_promote
from pipelines.cli import app
from tests.test_promote import CFG, NAME, add_version, champion, make_repo, promote

NAN, INF = float("nan"), float("inf")


KEYS = {"fid": "fid10k", "kid": "kid10k", "std": "kid10k_std", "share": "judge/min_share_ratio"}


def version(v: str, fid: float | str = 20.0, kid: float | str = 0.010, std: float | str = 0.001,
            share: float | str = 1.0, drop: tuple[str, ...] = ()) -> VersionRecord:
    """A version with every figure the gate reads (KEYS), less those in `drop`."""
    figs = {"fid": fid, "kid": kid, "std": std, "share": share}
    return VersionRecord(v, {KEYS[k]: x for k, x in figs.items() if k not in drop}, "d1")


GOOD_CHAMP = version("1", fid=30.0, kid=0.020)


# ---- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("who, key, value", [
    ("candidate", "fid", NAN), ("candidate", "fid", -1.0), ("candidate", "fid", INF), ("candidate", "fid", "abc"),
    ("candidate", "kid", NAN), ("candidate", "kid", -1.0), ("candidate", "kid", "-inf"),
    ("candidate", "std", NAN), ("candidate", "std", -0.001), ("candidate", "std", INF), ("candidate", "std", "abc"),
    ("candidate", "share", NAN), ("candidate", "share", -0.5), ("candidate", "share", ""),
    ("champion", "fid", -5.0), ("champion", "fid", NAN), ("champion", "kid", "x"), ("champion", "std", NAN),
    ("champion", "share", NAN),
])
def test_a_figure_that_is_not_a_finite_number_in_range_is_an_error_not_a_decision(
        who: str, key: str, value: float | str) -> None:
    bad = version("2" if who == "candidate" else "1", **{key: value})
    cand, champ = (bad, GOOD_CHAMP) if who == "candidate" else (version("2"), bad)
    with pytest.raises(GanopsError, match=f"{who} v{bad.version}: metric {KEYS[key]} is"):
        should_promote(cand, champ, CFG)


def test_a_nan_kid_std_does_not_skip_the_kid_rule() -> None:
    """The case that used to promote: NaN noise made `kid_gain <= noise` false, so the KID rule passed."""
    champ = version("1", fid=30.0, kid=0.010)
    assert not should_promote(version("2", fid=25.0, kid=0.010), champ, CFG).promote  # equal KID: refused
    with pytest.raises(GanopsError, match="kid10k_std is nan"):
        should_promote(version("2", fid=25.0, kid=0.010, std=NAN), champ, CFG)
    with pytest.raises(GanopsError, match="fid10k is -1"):  # and a negative FID is not a perfect one
        should_promote(version("2", fid=-1.0), None, CFG)


def test_kid_may_be_slightly_negative_as_an_unbiased_estimate_is_but_not_beyond_its_noise() -> None:
    std = 0.001
    ok = should_promote(version("2", fid=20.0, kid=-(KID_NEG_SIGMAS - 0.5) * std, std=std), GOOD_CHAMP, CFG)
    assert ok.promote and ok.figures["candidate_kid"] < 0
    with pytest.raises(GanopsError, match=r"kid10k is -0.0035, not a finite number >= -3 × kid10k_std"):
        should_promote(version("2", fid=20.0, kid=-(KID_NEG_SIGMAS + 0.5) * std, std=std), GOOD_CHAMP, CFG)


def test_kid_without_its_std_or_std_without_kid_is_an_error() -> None:
    with pytest.raises(GanopsError, match="kid10k without kid10k_std"):
        should_promote(version("2", drop=("std",)), GOOD_CHAMP, CFG)
    with pytest.raises(GanopsError, match="kid10k_std without kid10k"):
        should_promote(version("2", drop=("kid",)), GOOD_CHAMP, CFG)
    # both absent (evaluated without KID) is fine: the KID rule does not apply
    assert should_promote(version("2", drop=("kid", "std")), GOOD_CHAMP, CFG).promote


# ---- ganops promote against a real registry --------------------------------------------------------

@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.mark.parametrize("bad, tags, needle", [
    ("candidate", {"metric.kid10k_std": "nan"}, "candidate v3: metric kid10k_std is nan"),
    ("candidate", {"metric.kid10k": "abc"}, "candidate v3: metric kid10k is 'abc', not a number"),
    ("champion", {"metric.fid10k": "-100"}, "champion v1: metric fid10k is -100"),
])
def test_promote_exits_2_on_a_hostile_figure_and_leaves_the_champion(
        repo: Path, tmp_path: Path, bad: str, tags: dict[str, str], needle: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = add_version(uri, 30.0, kid=0.020)
    # the first through a candidate file as `ganops evaluate` writes it: the checks on its shape pass it
    (repo / "candidate.json").write_text(json.dumps({"registered": True, "run_id": "r", "metrics": {},
                                                     "name": NAME, "version": v1, "model_uri": f"models:/{NAME}/{v1}"}))
    assert promote(repo, uri, "--candidate", "candidate.json").returncode == 0
    add_version(uri, 28.0, kid=0.018)  # v2, so the hostile one is v3
    v3 = add_version(uri, 20.0, kid=0.010)
    client = MlflowClient(uri)
    for k, v in tags.items():  # what a hand-edited or forged registry record looks like
        client.set_model_version_tag(NAME, v1 if bad == "champion" else v3, k, v)
    res = promote(repo, uri, "--version", v3)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert champion(uri) == v1 and "ganops.decision" not in client.get_model_version(NAME, v3).tags


# ---- models/candidate.json of the wrong shape ------------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    (b"[1, 2]", "expected the JSON object `ganops evaluate` writes, found a list"),
    (b'"v1"', "found a str"),
    (b"{}", "'registered' must be true or false, found None"),
    (b'{"registered": "yes", "version": "1"}', "'registered' must be true or false, found 'yes'"),
    (b'{"registered": true}', "'version' must be a registry version number, found None"),
    (b'{"registered": true, "version": [1]}', "'version' must be a registry version number, found [1]"),
    (b'{"registered": true, "version": "1/../2"}', "found '1/../2'"),
    (b'{"registered": true, "version": true}', "found True"),
    (b'{"registered": true, "version": "1", "name": "other"}', "a version of 'other', not of promote.model_name"),
    (b'{"registered": true, "version": "\xff"}', "not JSON"),
])
def test_a_candidate_file_of_the_wrong_shape_is_one_line_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, needle: str) -> None:
    repo = make_repo(tmp_path)
    monkeypatch.chdir(repo)
    (repo / "candidate.json").write_bytes(content)
    res = CliRunner().invoke(app, ["promote", "--params", "params.yaml", "--candidate", "candidate.json",
                                   "--out", "promote.json"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: candidate.json: ") and needle in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (repo / "promote.json").exists()

