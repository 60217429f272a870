"""Tests of KL annealing (beta) and the teacher-forcing ratio at the boundary epochs."""

from __future__ import annotations

import itertools

import pytest

from cvae.schedules import KLAnnealing, TeacherForcing, kl_beta, teacher_forcing_ratio

# ------------------------------------------------------------------------------ Monotonic


@pytest.mark.parametrize(
    "epoch, beta",
    [(0, 0.0), (1, 0.1), (5, 0.5), (9, 0.9), (10, 1.0), (11, 1.0), (20, 1.0), (69, 1.0)],
)
def test_monotonic_ratio_1(epoch, beta):
    assert kl_beta(epoch, "Monotonic", 10, 1.0) == pytest.approx(beta)


@pytest.mark.parametrize(
    "epoch, beta", [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (5, 1.0), (40, 1.0)]
)
def test_monotonic_ramp_ends_at_cycle_times_ratio(epoch, beta):
    # cycle 8, ratio 0.5: the ramp is 4 epochs long
    assert kl_beta(epoch, "Monotonic", 8, 0.5) == pytest.approx(beta)


def test_monotonic_never_falls_back():
    betas = [kl_beta(e, "Monotonic", 10, 0.5) for e in range(60)]
    assert betas == sorted(betas)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    assert all(0.0 <= b <= 1.0 for b in betas)


# ------------------------------------------------------------------------------- Cyclical


@pytest.mark.parametrize("cycle_start", [0, 10, 20, 60])
def test_cyclical_is_zero_at_each_cycle_start(cycle_start):
    assert kl_beta(cycle_start, "Cyclical", 10, 1.0) == 0.0
    assert kl_beta(cycle_start, "Cyclical", 10, 0.5) == 0.0


@pytest.mark.parametrize(
    "epoch, beta", [(0, 0.0), (1, 0.1), (9, 0.9), (10, 0.0), (11, 0.1), (19, 0.9), (20, 0.0)]
)
def test_cyclical_ratio_1_is_linear_over_the_full_cycle(epoch, beta):
    assert kl_beta(epoch, "Cyclical", 10, 1.0) == pytest.approx(beta)


@pytest.mark.parametrize(
    "epoch, beta",
    [(0, 0.0), (1, 0.2), (4, 0.8), (5, 1.0), (9, 1.0), (10, 0.0), (12, 0.4), (15, 1.0),
     (19, 1.0)],
)
def test_cyclical_ratio_half_reaches_1_at_half_cycle(epoch, beta):
    assert kl_beta(epoch, "Cyclical", 10, 0.5) == pytest.approx(beta)


def test_cyclical_wraps_exactly_at_the_cycle_length():
    assert kl_beta(3, "Cyclical", 4, 1.0) == pytest.approx(0.75)
    assert kl_beta(4, "Cyclical", 4, 1.0) == 0.0  # epoch == cycle starts the next cycle
    assert kl_beta(5, "Cyclical", 4, 1.0) == pytest.approx(0.25)


def test_cyclical_is_periodic():
    for e in range(30):
        assert kl_beta(e, "Cyclical", 7, 0.6) == kl_beta(e + 7, "Cyclical", 7, 0.6)


@pytest.mark.parametrize("kind", ["Cyclical", "Monotonic"])
@pytest.mark.parametrize("epoch", [0, 1, 5, 10, 33])
def test_ratio_0_means_beta_1_from_the_start(kind, epoch):
    assert kl_beta(epoch, kind, 10, 0.0) == 1.0


@pytest.mark.parametrize("epoch", [0, 1, 10, 99])
def test_none_is_always_1(epoch):
    assert kl_beta(epoch, "None", 10, 1.0) == 1.0
    assert kl_beta(epoch, "None", 3, 0.0) == 1.0


@pytest.mark.parametrize("kind", ["Monotonic", "Cyclical", "None"])
def test_warmup_holds_beta_at_0_then_starts_the_schedule(kind):
    betas = [kl_beta(e, kind, 4, 0.5, warmup=3) for e in range(12)]
    assert betas[:3] == [0.0, 0.0, 0.0]
    assert betas[3:] == [kl_beta(e, kind, 4, 0.5) for e in range(9)]


def test_warmup_0_is_the_schedule_itself():
    for kind in ("Monotonic", "Cyclical", "None"):
        assert [kl_beta(e, kind, 5, 0.6, warmup=0) for e in range(20)] == [
            kl_beta(e, kind, 5, 0.6) for e in range(20)]


def test_unknown_type_raises():
    with pytest.raises(ValueError, match="Linear"):
        kl_beta(0, "Linear", 10, 1.0)
    with pytest.raises(ValueError, match="Linear"):
        kl_beta(0, "Linear", 10, 1.0, warmup=5)  # checked during the warm-up too


# -------------------------------------------------------------------------------- tfr


@pytest.mark.parametrize(
    "epoch, tfr",
    [(0, 1.0), (5, 1.0), (9, 1.0), (10, 0.9), (11, 0.8), (14, 0.5), (18, 0.1), (19, 0.0),
     (21, 0.0), (30, 0.0), (1000, 0.0)],
)
def test_tfr_lab_defaults(epoch, tfr):
    assert teacher_forcing_ratio(epoch, 1.0, 10, 0.1) == pytest.approx(tfr, abs=1e-12)


def test_tfr_is_never_negative():
    values = [teacher_forcing_ratio(e, 0.5, 2, 0.3) for e in range(12)]
    assert values[:2] == [0.5, 0.5]
    assert values[2] == pytest.approx(0.2)
    assert values[3:] == [0.0] * 9
    assert min(values) >= 0.0


def test_tfr_decay_starts_at_epoch_0():
    assert teacher_forcing_ratio(0, 0.8, 0, 0.25) == 0.8
    assert teacher_forcing_ratio(1, 0.8, 0, 0.25) == pytest.approx(0.55)


def test_tfr_no_decay():
    assert {teacher_forcing_ratio(e, 0.7, 0, 0.0) for e in range(50)} == {0.7}


def test_tfr_is_non_increasing():
    values = [teacher_forcing_ratio(e, 1.0, 3, 0.07) for e in range(40)]
    assert all(a >= b for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------- the objects


def test_kl_annealing_object_follows_the_function():
    kl = KLAnnealing("Cyclical", 4, 0.5)
    seen = []
    for _ in range(9):
        seen.append(kl.beta)
        kl.update()
    assert seen == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    assert kl.epoch == 9


def test_kl_weight_scales_the_annealed_beta():
    kl = KLAnnealing("Monotonic", 4, 0.5, weight=1e-4)
    seen = []
    for _ in range(4):
        seen.append(kl.beta)
        kl.update()
    assert seen == pytest.approx([0.0, 0.5e-4, 1e-4, 1e-4])
    assert KLAnnealing("None", 4, 0.5, weight=0.25).beta == 0.25


def test_kl_annealing_object_warms_up_and_resumes_inside_the_warmup():
    kl = KLAnnealing("None", 4, 0.5, weight=1e-4, warmup=2)
    assert kl.beta == 0.0
    kl.update()
    assert kl.beta == 0.0
    resumed = KLAnnealing("None", 4, 0.5, weight=1e-4, warmup=2)
    resumed.load_state_dict(kl.state_dict())
    assert resumed.beta == 0.0
    resumed.update()
    assert resumed.beta == pytest.approx(1e-4)


def test_teacher_forcing_object_follows_the_function():
    tf = TeacherForcing(1.0, 2, 0.5)
    seen = []
    for _ in range(6):
        seen.append(tf.ratio)
        tf.update()
    assert seen == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0, 0.0])


def test_state_dict_round_trip():
    kl, tf = KLAnnealing("Cyclical", 10, 0.5), TeacherForcing(1.0, 10, 0.1)
    for _ in range(13):
        kl.update()
        tf.update()
    kl_state, tf_state = kl.state_dict(), tf.state_dict()
    assert kl_state == {"epoch": 13} and tf_state == {"epoch": 13}
    kl2, tf2 = KLAnnealing("Cyclical", 10, 0.5), TeacherForcing(1.0, 10, 0.1)
    assert (kl2.beta, tf2.ratio) == (0.0, 1.0)
    kl2.load_state_dict(kl_state)
    tf2.load_state_dict(tf_state)
    assert kl2.epoch == 13 and tf2.epoch == 13
    assert kl2.beta == kl.beta == pytest.approx(0.6)
    assert tf2.ratio == tf.ratio == pytest.approx(0.6)
    kl2.update()
    assert kl2.beta == pytest.approx(0.8)


def test_load_state_dict_accepts_a_tensor_like_int():
    kl = KLAnnealing("Monotonic", 10, 1.0)
    kl.load_state_dict({"epoch": 4.0})
    assert kl.epoch == 4 and isinstance(kl.epoch, int)
    assert kl.beta == pytest.approx(0.4)
