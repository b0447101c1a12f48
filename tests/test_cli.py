"""Tests for the ``widelimit`` command line (run in-process through ``main([...])``)."""
import csv
import json
import math
import sys
import types

import numpy as np
import pytest

from widelimit import cli

SUBCOMMANDS = [[], ["solve"], ["table"], ["table", "ntk"], ["table", "norms"], ["validate"], ["derive"]]


@pytest.mark.parametrize("sub", SUBCOMMANDS, ids=lambda s: " ".join(s) or "top")
def test_help_every_subcommand(sub, capsys):
    assert cli.main(sub + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: widelimit" + "".join(" " + s for s in sub))
    assert "--help" in out


def test_help_mentions_options_and_studies(capsys):
    cli.main(["solve", "--help"])
    out = capsys.readouterr().out
    for opt in ("--depth", "--W-std", "--parameterization", "--data", "--kernels", "--lams", "--lr", "--t-max"):
        assert opt in out
    cli.main(["validate", "--help"])
    out = capsys.readouterr().out
    from widelimit.studies import STUDIES
    for name in STUDIES:
        assert name in out
    assert "quick" in STUDIES  # the main job's study


BAD = [
    (["solve", "--depth", "0"], "--depth"),
    (["solve", "--depth", "two"], "--depth"),
    (["solve", "--lams", "-0.1"], "--lams"),
    (["solve", "--lams", "nan"], "--lams"),
    (["solve", "--activation", "tanh"], "--activation"),
    (["solve", "--data", "cifar100"], "--data"),
    (["solve", "--classes", "3"], "--classes"),
    (["solve", "--n-train", "0"], "--n-train"),
    (["solve", "--W-std", "0"], "--W-std"),
    (["solve", "--steps-max", "100"], "--lr"),
    (["solve", "--t-min", "10", "--t-max", "1"], "--t-min"),
    (["solve", "--b-std", "0.1"], "homogeneous"),
    (["solve", "--activation", "erf"], "homogeneous"),
    (["solve", "--data", "teacher", "--classes", "0,1"], "--classes"),
    (["solve", "--data", "digits", "--n-train", "2000"], "n_train"),
    (["solve", "--kernels", "/nonexistent/k.npz"], "--kernels"),
    (["solve", "--targets", "pm1"], "pm1"),
    (["table", "ntk", "--budgets", "100"], "--lr"),
    (["table", "ntk", "--format", "html"], "--format"),
    (["table", "ntk", "--out", "x.xlsx"], "--out"),
    (["table", "norms", "--momentum", "1.0"], "--momentum"),
    (["table", "norms", "--optimizers", "rmsprop"], "--optimizers"),
    (["table", "norms", "--lrs", "0"], "--lrs"),
    (["table", "norms", "--betas", "0.9"], "--betas"),
    (["table", "norms", "--lrs", "10", "--lams", "0.5"], "--lrs"),
    (["table"], "TABLE"),
    ([], "SUBCOMMAND"),
    (["validate", "nosuchstudy"], "STUDY"),
    (["validate", "quick", "--size", "huge"], "--size"),
    (["derive", "nosuch"], "NAME"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_bad_arguments_exit_2_naming_the_option(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error" in err and needle in err
    assert not any(tmp_path.iterdir())  # nothing written before the arguments were checked
