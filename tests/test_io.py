def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    import os

    from supernet.io import atomic_write_bytes

    path = tmp_path / "sub" / "f.json"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temp files left behind


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_plots_leave_the_users_matplotlib_backend_alone(tmp_path):
    """A notebook user's backend must survive a search or validation plot (pyplot.use would switch it)."""
    import matplotlib

    from latency.validate import scatter_plot

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend no library code would pick
    try:
        scatter_plot([1.0, 2.0], [1.1, 1.9], {"device": "cpu", "mape": 5.0, "kendall_tau": 1.0, "n": 2}, tmp_path / "v.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
