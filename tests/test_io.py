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
