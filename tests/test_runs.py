import pytest

from drat.runs import RunName, parse_run_name, run_name, sort_runs


@pytest.mark.parametrize("name", ["none", "sac", "drat-lam0.05", "drat-budget6", "oracle-lam1e-05",
                                  "oracle-budget2.5"])
def test_names_round_trip(name):
    r = parse_run_name(name)
    assert str(r) == name == run_name(r.kind, r.lam, r.budget_gib)


def test_parsed_fields():
    assert parse_run_name("drat-lam0.05") == RunName("drat", lam=0.05)
    assert parse_run_name("oracle-budget6") == RunName("oracle", budget_gib=6.0)
    assert run_name("drat", budget_gib=6.0) == "drat-budget6"


@pytest.mark.parametrize("bad", ["drat", "drat-lam", "drat-lamx", "foo-lam1", "none-lam1", "drat-lam-1"])
def test_bad_names_are_refused_with_the_grammar(bad):
    with pytest.raises(ValueError, match="drat-lam<λ>"):
        parse_run_name(bad)


def test_run_name_refuses_half_targets():
    with pytest.raises(ValueError):
        run_name("drat")
    with pytest.raises(ValueError):
        run_name("none", lam=1.0)


def test_sort_order():
    names = ["drat-budget3", "drat-lam1", "full", "drat-lam0.05", "none", "weird"]
    assert sort_runs(names) == ["none", "full", "drat-lam0.05", "drat-lam1", "drat-budget3", "weird"]
