"""sweeps.persistence: features that persist across sweep members, on
synthetic members whose answer is known: a permuted, sign-flipped, rescaled,
noisy copy matches fully (to the permutation); an independent member does
not; a rank-4 member carrying each rank-1 scalar in one slot matches it
there, and one carrying it rotated across its slots is found by the
rotation-invariant subspace correlation; decoder cosines are 1 for a
sign-flipped, rescaled copy of the adapter and of the SAE, and null where
the scalar layouts differ."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sweepfiles import (
    CATEGORIES,
    MODULES,
    adapter_factors,
    member,
    random_sae,
    write_member,
)

from lorascope.sweeps.job import persistence_table
from lorascope.sweeps.members import SweepError

N, C, F = 600, len(MODULES), 6
PERM = np.array([2, 0, 3, 1])  # other's scalar j carries the reference's PERM[j]
SIGN = torch.tensor([-1.0, 1.0, -1.0, 1.0])
SCALE = torch.tensor([2.0, 0.5, 3.0, 1.0])
PERM_F = np.array([3, 5, 0, 1, 4, 2])  # other's latent k is the reference's PERM_F[k]


def _noise(gen, *shape, scale=0.05):
    return scale * torch.randn(*shape, generator=gen)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sweep")
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(N, C, generator=gen)  # the reference's scalars
    ref_factors = adapter_factors(1, gen)
    ref_sae = random_sae(C, F, gen)
    d = SIGN * SCALE
    members = [
        member(
            "r1-s1",
            1,
            1,
            write_member(tmp / "ref", s, ref_factors, ref_sae, labels=True),
        )
    ]  # noqa: E501
    # seed 2: the reference's scalars permuted across columns, flipped, rescaled
    perm = s[:, PERM] * d + _noise(gen, N, C)
    members.append(
        member(
            "r1-s2",
            1,
            2,
            write_member(
                tmp / "perm", perm, adapter_factors(1, gen), random_sae(C, F, gen)
            ),
        )
    )  # noqa: E501
    # seed 3: same modules, each direction flipped and rescaled (A by d, B by 1/d:
    # the same adapter), the SAE re-expressed for those scalars, latents permuted
    flip = s * d + _noise(gen, N, C)
    flip_factors = {
        m: {"A": ab["A"] * d[i], "B": ab["B"] / d[i]}
        for i, (m, ab) in enumerate(ref_factors.items())
    }
    flip_sae = {
        "W_enc": (ref_sae["W_enc"] / d[:, None])[:, PERM_F],
        "b_enc": ref_sae["b_enc"][PERM_F],
        "W_dec": (ref_sae["W_dec"] * d[None, :])[PERM_F],
        "b_dec": ref_sae["b_dec"] * d,
        "threshold": ref_sae["threshold"][PERM_F],
    }
    members.append(
        member("r1-s3", 1, 3, write_member(tmp / "flip", flip, flip_factors, flip_sae))
    )  # noqa: E501
    # seed 4: independent of the reference
    indep = torch.randn(N, C, generator=gen)
    members.append(
        member(
            "r1-s4",
            1,
            4,
            write_member(
                tmp / "indep", indep, adapter_factors(1, gen), random_sae(C, F, gen)
            ),
        )
    )  # noqa: E501
    # rank 4: module m's slot 2 carries the reference's scalar m, the rest noise
    slots = torch.randn(N, C, 4, generator=gen)
    slots[:, :, 2] = s * 1.5
    r4 = slots.reshape(N, 4 * C)
    members.append(
        member(
            "r4-s1",
            4,
            1,
            write_member(
                tmp / "r4", r4, adapter_factors(4, gen), random_sae(4 * C, F, gen)
            ),
        )
    )  # noqa: E501
    # rank 4, rotated: module m's four slots are a rotation of (scalar m, 3 noise)
    q = torch.linalg.qr(torch.randn(C, 4, 4, generator=gen))[0]
    base = torch.randn(N, C, 4, generator=gen)
    base[:, :, 0] = s
    rot = torch.einsum("ncj,cij->nci", base, q).reshape(N, 4 * C)
    members.append(
        member(
            "r4-s2",
            4,
            2,
            write_member(
                tmp / "rot", rot, adapter_factors(4, gen), random_sae(4 * C, F, gen)
            ),
        )
    )  # noqa: E501
    out = tmp / "out"
    rows = persistence_table(
        members,
        "r1-s1",
        out / "p.parquet",
        out / "p.md",
        out / "s.parquet",
        batch_size=97,  # not a divisor of the shard sizes: batches cross shards
    )
    return {"rows": rows, "out": out, "members": members, "tmp": tmp}


def _of(rows, tag, kind="lora"):
    return rows.filter((pl.col("member") == tag) & (pl.col("kind") == kind)).sort(
        "feature"
    )  # noqa: E501


def test_permuted_flipped_copy_matches_fully(world):
    rows = _of(world["rows"], "r1-s2")
    assert rows.height == C and rows["matched"].all()
    # reference scalar PERM[j] is the other's scalar j, with the sign of d
    want = np.argsort(PERM)
    assert rows["match_unit"].to_list() == want.tolist()
    sign = np.sign(rows["corr"].to_numpy())
    np.testing.assert_array_equal(sign, (SIGN.numpy())[want])
    assert rows["abs_corr"].min() > 0.99
    assert rows["n_tokens"].unique().to_list() == [N]


def test_independent_member_does_not_match(world):
    for kind in ("lora", "sae"):
        rows = _of(world["rows"], "r1-s4", kind)
        assert not rows["matched"].any()
        assert rows["abs_corr"].max() < 0.3  # chance level at N = 600: ~0.04


def test_decoder_cosines_of_a_flipped_rescaled_copy(world):
    lora = _of(world["rows"], "r1-s3")
    assert lora["match_unit"].to_list() == list(range(C))
    for col in ("read_cos", "write_cos", "read_cos_best", "write_cos_best"):
        np.testing.assert_allclose(lora[col].to_numpy(), 1.0, atol=1e-9)
    sae = _of(world["rows"], "r1-s3", "sae")
    assert sae["matched"].all()
    assert sae["match_unit"].to_list() == np.argsort(PERM_F).tolist()
    # the decoders agree once each scalar is in units of its spread and the
    # flipped scalars are aligned (noise makes the spreads differ slightly)
    assert sae["dec_cos"].min() > 0.99
    assert sae["dec_match"].to_list() == sae["match_unit"].to_list()
    # a permuted member's adapter is independent: its matched pairs sit in
    # other modules, so no pair cosine
    assert _of(world["rows"], "r1-s2")["read_cos"].is_null().all()


def test_rank4_slot_matches_and_rotation_is_found_by_the_subspace(world):
    rows = _of(world["rows"], "r4-s1")
    assert rows["matched"].all()
    assert rows["match_unit"].to_list() == [4 * m + 2 for m in range(C)]
    assert rows["match_label"].to_list() == [
        f"L{m // 2}.{('q', 'gate')[m % 2]}#2" for m in range(C)
    ]  # noqa: E501
    rot = _of(world["rows"], "r4-s2")
    np.testing.assert_allclose(rot["r_subspace"].to_numpy(), 1.0, atol=1e-6)
    assert (rot["best_abs_corr"] < 0.999).all()  # no single slot carries it
    # SAEs over different scalar layouts have no shared coordinates
    assert _of(world["rows"], "r4-s1", "sae")["dec_cos"].is_null().all()
    indep = _of(world["rows"], "r1-s4")
    assert indep["r_subspace"].max() < 0.3


def test_shares_by_category_and_class_with_counts(world):
    shares = pl.read_parquet(world["out"] / "s.parquet")
    copy = shares.filter((pl.col("member") == "r1-s2") & (pl.col("kind") == "lora"))
    by_cat = {
        r["group"]: (r["n"], r["n_matched"])
        for r in copy.filter(pl.col("by") == "category").iter_rows(named=True)
    }  # noqa: E501
    # features 0..2 labelled math, discourse, math; feature 3 failed
    assert by_cat == {"math": (2, 2), "discourse": (1, 1), "(unlabelled)": (1, 1)}
    by_cls = {
        r["group"]: r["n"]
        for r in copy.filter(pl.col("by") == "class").iter_rows(named=True)
    }  # noqa: E501
    assert by_cls == {
        "monosemantic": 1,
        "broad but consistent": 1,
        "polysemantic": 1,
        "(unlabelled)": 1,
    }  # noqa: E501
    indep = shares.filter((pl.col("member") == "r1-s4") & (pl.col("by") == "all"))
    assert indep["share"].to_list() == [0.0, 0.0]
    assert set(CATEGORIES) <= set(shares["group"])
    md = (world["out"] / "p.md").read_text()
    assert "1.00 [" in md and "(4/4)" in md and "0.7" in md


def test_members_on_other_tokens_fail_naming_the_member(world, tmp_path):
    ref, *_ = world["members"]
    gen = torch.Generator().manual_seed(1)
    odd = write_member(
        tmp_path / "odd",
        torch.randn(N, C, generator=gen),
        adapter_factors(1, gen),
        random_sae(C, F, gen),
        doc_len=10,
    )  # noqa: E501
    short = write_member(
        tmp_path / "short",
        torch.randn(N - 20, C, generator=gen),
        adapter_factors(1, gen),
        random_sae(C, F, gen),
    )  # noqa: E501
    out = tmp_path / "out"
    args = (out / "p.parquet", out / "p.md", out / "s.parquet")
    with pytest.raises(
        SweepError, match=r"'odd'.*row 10 is doc 1, pos 0.*doc 0, pos 10"
    ):  # noqa: E501
        persistence_table([ref, member("odd", 1, 5, odd)], "r1-s1", *args)
    with pytest.raises(SweepError, match=r"different tokens.*short: 580"):
        persistence_table([ref, member("short", 1, 6, short)], "r1-s1", *args)
    assert not out.exists()  # nothing written


def test_missing_artifact_names_the_file(world, tmp_path):
    ref, other, *_ = world["members"]
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(other["root"], broken)
    (broken / "sae/model/cfg.json").unlink()
    with pytest.raises(SweepError, match=r"broken/sae/model/cfg.json \(member r1-s9\)"):
        persistence_table(
            [ref, member("r1-s9", 1, 9, broken)],
            "r1-s1",
            tmp_path / "a",
            tmp_path / "b",
            tmp_path / "c",
        )
    # kind lora alone does not need the SAE
    rows = persistence_table(
        [ref, member("r1-s9", 1, 9, broken)],
        "r1-s1",
        tmp_path / "a",
        tmp_path / "b",
        tmp_path / "c",
        kinds=["lora"],
    )
    assert set(rows["kind"]) == {"lora"} and rows["matched"].all()


def test_empty_and_lonely_member_lists_fail(world, tmp_path):
    ref = world["members"][0]
    with pytest.raises(SweepError, match="no members"):
        persistence_table([], "r1-s1", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    with pytest.raises(SweepError, match="no member besides the reference"):
        persistence_table(
            [ref], "r1-s1", tmp_path / "a", tmp_path / "b", tmp_path / "c"
        )  # noqa: E501
    with pytest.raises(SweepError, match="'r9' is not a member"):
        persistence_table([ref], "r9", tmp_path / "a", tmp_path / "b", tmp_path / "c")


def test_correlation_sums_above_the_memory_limit_fail_before_the_pass(world, tmp_path):
    ref, other, *_ = world["members"]
    with pytest.raises(SweepError, match=r"need 0.0 GiB .* above the limit of 1e-09"):
        persistence_table(
            [ref, other],
            "r1-s1",
            tmp_path / "a",
            tmp_path / "b",
            tmp_path / "c",
            max_gib=1e-9,
        )


def test_both_signs_of_a_direction_name_the_partner_side(world, tmp_path):
    """Polarity both: features 2u (+) and 2u+1 (-) of unit u share its match;
    the partner's side is the feature's sign times the correlation's."""
    import shutil

    from sweepfiles import write_labels

    ref, other, *_ = world["members"]
    root = tmp_path / "ref"
    shutil.copytree(ref["root"], root)
    pl.DataFrame(
        {
            "feature": np.arange(2 * C),
            "kind": "lora",
            "label": [f"u{u}{s}" for u in range(C) for s in "+-"],
            "component": np.repeat(np.arange(C), 2),
            "sign": [1, -1] * C,
        }
    ).write_parquet(root / "features/lora/features.parquet")
    write_labels(root, "lora", 2 * C)
    rows = persistence_table(
        [dict(ref, root=str(root)), other],
        "r1-s1",
        tmp_path / "a",
        tmp_path / "b",
        tmp_path / "c",
        kinds=["lora"],
    ).sort("feature")
    assert rows.height == 2 * C and rows["matched"].all()
    # reference unit u is the other's scalar argsort(PERM)[u], flipped where SIGN < 0
    j = np.argsort(PERM)
    names = ["L0.q", "L0.gate", "L1.q", "L1.gate"]
    want = [
        names[j[u]] + ("+" if s * SIGN[j[u]] > 0 else "-")
        for u in range(C)
        for s in (1, -1)
    ]
    assert rows["match_label"].to_list() == want


def test_job_kinds_are_the_pass_kinds():
    """job.py names the kinds without importing the pass (torch): the same."""
    from lorascope.sweeps import job, persistence

    assert job.KINDS == persistence.KINDS


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"threshold": 0}, r"threshold 0 is not in \(0, 1\]"),
     ({"threshold": 1.5}, r"threshold 1.5 is not"),
     ({"batch_size": 0}, "batch_size 0 is below 1")],
)  # fmt: skip
def test_bad_settings_fail_naming_them(world, tmp_path, setting, message):
    ref, other, *_ = world["members"]
    with pytest.raises(SweepError, match=message):
        persistence_table([ref, other], "r1-s1", tmp_path / "a", tmp_path / "b",
                          tmp_path / "c", **setting)  # fmt: skip
