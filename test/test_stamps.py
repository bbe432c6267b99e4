"""StampMonitor: which header stamps are warned about, counted, and what counts as "last"."""

from depth_perception.ros.stamps import StampMonitor

S = 1_000_000_000
NOW = 1_800_000_000 * S


def test_stamp_problems_are_named_and_counted():
    m = StampMonitor(future_tolerance_s=10.0)
    assert m.check(NOW - 5 * S, NOW) is None
    assert m.check(NOW - 5 * S, NOW) == "header stamp repeats the previous frame's"
    assert "went back 1.500 s" in m.check(NOW - int(6.5 * S), NOW)
    assert m.check(0, NOW).startswith("zero header stamp")
    assert "20.0 s ahead" in m.check(NOW + 20 * S, NOW)
    assert m.check(NOW + 5 * S, NOW) is None  # within the tolerance: clocks differ a little
    # Zero and future stamps are not "the last stamp": the next ordinary frame is fine.
    assert m.check(NOW + 6 * S, NOW) is None
    assert m.counters() == {
        "stamps_zero": 1,
        "stamps_future": 1,
        "stamps_duplicate": 1,
        "stamps_backwards": 1,
    }


def test_simulated_clock_not_started_disables_the_future_check():
    m = StampMonitor()
    assert m.check(NOW, 0) is None  # use_sim_time before the first /clock message
    assert m.future == 0
