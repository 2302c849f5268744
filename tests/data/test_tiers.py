"""The study's tiers have one table (data/datasets.py TIERS): the configs agree with it, and
everything that lists tiers (tier(), the report's order and names, the explorer) follows it."""

from pathlib import Path

import yaml

from vae_latent.data import datasets
from vae_latent.data.datasets import DATASETS, TIERS, DatasetInfo, Tier, image_shape, tier
from vae_latent.latent.explorer_page import sweep_page
from vae_latent.study import stats

CONF = Path(__file__).resolve().parents[2] / "conf"


def _overrides(path: Path) -> dict[str, str]:
    """``override /group: option`` entries of a config's defaults list."""
    found = {}
    for entry in yaml.safe_load(path.read_text())["defaults"]:
        for key, value in entry.items():
            found[key.removeprefix("override /")] = value
    return found


def test_each_tier_config_selects_its_tables_dataset_and_channels():
    assert {p.stem for p in (CONF / "tier").glob("*.yaml")} == set(TIERS)
    for name, t in TIERS.items():
        assert _overrides(CONF / "tier" / f"{name}.yaml") == {
            "dataset": t.dataset,
            "channels": t.channels,
        }
        assert (CONF / "dataset" / f"{t.dataset}.yaml").is_file()
        assert (CONF / "channels" / f"{t.channels}.yaml").is_file()


def test_the_paper_sweeps_every_tier_of_the_table():
    """experiment=paper's +tier list: the table's tiers (its order is the sweep's job order)."""
    paper = yaml.safe_load((CONF / "experiment" / "paper.yaml").read_text())
    swept = paper["hydra"]["sweeper"]["params"]["+tier"].split(",")
    assert sorted(swept) == sorted(TIERS) and len(swept) == len(set(swept))


def test_each_run_has_one_tier_and_tier_reads_the_table():
    for name, t in TIERS.items():
        assert tier(t.dataset, t.channels) == name
    shapes = [(t.dataset, image_shape(t.dataset, t.channels)[0]) for t in TIERS.values()]
    assert len(shapes) == len(set(shapes))  # no two tiers hold the same images
    # As before the table: MNIST-family sets are gray whatever channels says; CIFAR-10 native is
    # RGB; a dataset this tool does not know keeps its name.
    assert tier("mnist", "rgb") == tier("mnist", "gray") == "mnist"
    assert tier("cifar10", "native") == tier("cifar10", None) == "cifar10_rgb"
    assert tier("svhn", "gray") == "svhn" and tier(None, "gray") == "None"


def test_a_tier_added_to_the_table_shows_up_everywhere_tiers_are_listed(monkeypatch):
    info = DatasetInfo("SVHN", "SVHN", 3, 32, "svhn/{train,test}_32x32.mat", 73_257)
    monkeypatch.setitem(DATASETS, "svhn", info)
    monkeypatch.setitem(TIERS, "svhn_gray", Tier("svhn", "gray", "SVHN gray"))
    assert tier("svhn", "gray") == "svhn_gray" and tier("svhn", "native") == "svhn"
    assert stats.tier_order()[-1] == "svhn_gray"
    assert datasets.tier_names()["svhn_gray"] == "SVHN gray"
    rows = [{"tier": t} for t in ("svhn_gray", "mnist", "elsewhere")]
    assert [r["tier"] for r in sorted(rows, key=stats.run_order)] == [
        "mnist",
        "svhn_gray",
        "elsewhere",
    ]
    assert '["svhn_gray","SVHN gray"]]' in sweep_page([])  # the sweep page's tiers, last
