"""bench/index_build_speed.py's own arithmetic: the latency percentiles and the --limit folder."""

from samples import bench_script, make_image

bench = bench_script("index_build_speed")


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(20, 0, -1)]  # 1..20, unsorted
    assert bench.percentile(values, 0.5) == 10 and bench.percentile(values, 0.95) == 19
    assert bench.percentile([7.0], 0.95) == 7 and bench.percentile([1.0, 2.0], 0.5) == 1


def test_limit_links_the_first_images_in_listing_order(tmp_path):
    for name in ("b/2.jpg", "a/1.jpg", "c/3.png"):
        make_image(tmp_path / "src" / name)
    folder = bench.first_images(tmp_path / "src", 2, tmp_path / "first")
    assert sorted(p.name for p in folder.iterdir()) == ["0000.jpg", "0001.jpg"]
    assert (folder / "0000.jpg").resolve() == (tmp_path / "src" / "a" / "1.jpg").resolve()
    assert bench.first_images(tmp_path / "src", None, tmp_path / "all") == tmp_path / "src"
