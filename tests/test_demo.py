import io

from mesh_core.demo import run_demo


def test_demo_shows_failover_standby_recovery_and_a_cut_stream():
    out = io.StringIO()
    run_demo(requests=28, pace=0, out=out)
    text = out.getvalue()
    assert "failed over from alpha.fast: server_error" in text
    assert "beta.smart → standby (quota_exhausted" in text
    assert "back from standby" in text
    assert "alpha.fast broke mid-answer: 'Hello from fast.'" in text
    assert "beta.smart → standby (quota_exhausted, back in 4.0s)" in text  # a failed trial
    assert text.rstrip().splitlines()[-3].startswith("alpha.fast")
