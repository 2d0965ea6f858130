"""The zoo caches (certify.models.zoo, certify.inverse.zoo via certify.models.hashing.cached_weights): a cache file
whose weights do not match their recorded sha256 or recipe is retrained with one line on stderr, never loaded;
concurrent trainers of one entry leave one good file."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from certify.inverse import zoo as denoiser_zoo
from certify.models import model_hash, zoo
from certify.models.hashing import load_cached, state_dict_hash
from certify.models.training import accuracy

NAME = "moons-softplus-mlp"  # the fastest zoo model to train (about a second)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CERTIFY_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture
def trained(cache, capsys):
    """(model hash, test accuracy, cache file) of NAME trained into an empty cache."""
    model, data = zoo.load(NAME)
    (entry,) = (cache / "models").glob(f"{NAME}-*.pt")
    capsys.readouterr()
    return model_hash(model), accuracy(model, data.x_test, data.y_test), entry


def _reload_expecting_retrain(trained, capsys, why: str) -> None:
    reference, reference_accuracy, entry = trained
    model, data = zoo.load(NAME)
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and str(entry) in message[0] and why in message[0] and "retraining" in message[0]
    assert model_hash(model) == reference
    assert accuracy(model, data.x_test, data.y_test) == reference_accuracy >= 0.95
    again, _ = zoo.load(NAME)  # the retrained file is good again: loaded silently
    assert capsys.readouterr().err == "" and model_hash(again) == reference


def _rewrite_weights(entry, change) -> None:
    """A tamperer editing the weights inside the cache file but keeping the recorded hash and recipe."""
    stored = torch.load(entry, weights_only=True)
    stored["state_dict"] = {k: change(v) for k, v in stored["state_dict"].items()}
    torch.save(stored, entry)


def test_an_intact_entry_loads_silently(trained, capsys):
    reference, _, _ = trained
    model, _ = zoo.load(NAME)
    assert capsys.readouterr().err == "" and model_hash(model) == reference


def test_64_flipped_bytes_inside_the_weights_are_retrained(trained, capsys):
    _, _, entry = trained
    raw = bytearray(entry.read_bytes())
    weight = max(torch.load(entry, weights_only=True)["state_dict"].values(), key=torch.numel)
    start = bytes(raw).find(weight.numpy().tobytes())
    assert start >= 0 and weight.numel() * 4 >= 64 + 16
    for i in range(start + 16, start + 16 + 64):
        raw[i] ^= 0xFF
    entry.write_bytes(bytes(raw))
    _reload_expecting_retrain(trained, capsys, "sha256 differs")


@pytest.mark.parametrize("change", [torch.zeros_like, lambda v: torch.full_like(v, float("nan"))], ids=["zero", "nan"])
def test_weights_set_to_zero_or_nan_are_retrained(trained, capsys, change):
    _rewrite_weights(trained[2], change)
    _reload_expecting_retrain(trained, capsys, "sha256 differs")


def test_nan_weights_with_a_matching_hash_are_still_refused(trained, capsys):
    _, _, entry = trained
    stored = torch.load(entry, weights_only=True)
    stored["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in stored["state_dict"].items()}
    stored["weights_sha256"] = state_dict_hash(stored["state_dict"])
    torch.save(stored, entry)
    _reload_expecting_retrain(trained, capsys, "NaN")


def test_a_changed_recipe_an_old_format_and_a_truncated_file_are_retrained(trained, capsys):
    _, _, entry = trained
    stored = torch.load(entry, weights_only=True)
    torch.save({**stored, "recipe": stored["recipe"].replace('"epochs": 200', '"epochs": 1')}, entry)
    _reload_expecting_retrain(trained, capsys, "another recipe")
    torch.save(stored["state_dict"], entry)  # the format before hashes: weights alone
    _reload_expecting_retrain(trained, capsys, "no recorded weights hash")
    entry.write_bytes(entry.read_bytes()[:-100])
    _reload_expecting_retrain(trained, capsys, "unreadable")


def test_load_cached_rejects_another_recipe_without_touching_the_file(trained, capsys):
    _, _, entry = trained
    before = entry.read_bytes()
    assert load_cached(entry, {"something": "else"}) is None
    assert "another recipe" in capsys.readouterr().err and entry.read_bytes() == before


def test_concurrent_trainers_leave_one_good_file(cache):
    script = textwrap.dedent(f"""
        from certify.models import model_hash, zoo
        model, _ = zoo.load({NAME!r})
        print(model_hash(model))
    """)
    env = {**os.environ, "CERTIFY_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    hashes = {out.strip() for out, _ in results}
    assert len(hashes) == 1
    assert [p.name for p in (cache / "models").iterdir()] == [f"{NAME}-{zoo.recipe(NAME).digest()[:16]}.pt"]
    assert load_cached(next((cache / "models").iterdir()), zoo.asdict(zoo.recipe(NAME))) is not None


def test_the_denoiser_zoo_retrains_a_tampered_entry(cache, monkeypatch, capsys):
    tiny = denoiser_zoo.DenoiserRecipe("laplace", 1.0, "l2", hidden=8, layers=2, steps=20, batch_size=64)
    monkeypatch.setitem(denoiser_zoo.RECIPES, "lpn-tiny", tiny)
    first = denoiser_zoo.load_lpn("lpn-tiny", progress=False)
    (entry,) = (cache / "lpn").glob("lpn-tiny-*.pt")
    _rewrite_weights(entry, torch.zeros_like)
    capsys.readouterr()
    again = denoiser_zoo.load_lpn("lpn-tiny", progress=False)
    assert "sha256 differs" in capsys.readouterr().err
    assert model_hash(again) == model_hash(first)


def _junk(seed: int, n: int) -> list[bytes]:
    """n files of random bytes (1 to 400 bytes) and n of the pickle opcodes random bytes hit hardest (stack pops)."""
    rng = random.Random(seed)
    noise = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(n)]
    opcodes = [bytes(rng.choice(b"\x80\x02}q(X.]0e(Kbs") for _ in range(rng.randrange(1, 40))) for _ in range(n)]
    return [b"hello", *noise, *opcodes]


def test_a_junk_model_cache_file_is_retrained_never_raises(tmp_path, capsys):
    """Random bytes once raised KeyError ("hello") or IndexError (pop from empty list) out of load_cached."""
    path = tmp_path / "m.pt"
    for blob in _junk(0, 150):
        path.write_bytes(blob)
        assert load_cached(path, {"recipe": 1}) is None
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and str(path) in err[0] and "retraining" in err[0]


def test_a_junk_data_set_cache_file_is_rebuilt_never_raises(tmp_path, capsys):
    from certify.models.datasets import _read_cache

    path = tmp_path / "d.pt"
    for blob in _junk(1, 150):
        path.write_bytes(blob)
        assert _read_cache(path) is None
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and str(path) in err[0] and "rebuilding" in err[0]


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks")
def test_a_cache_file_that_is_a_fifo_or_a_device_is_refused_before_reading(tmp_path, capsys):
    """A symlink to /dev/zero was read without end (MemoryError); a FIFO would block the open."""
    from certify.models.datasets import _read_cache

    os.mkfifo(tmp_path / "fifo.pt")
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    for name in ("fifo.pt", "zero.pt"):
        assert load_cached(tmp_path / name, {"recipe": 1}) is None and _read_cache(tmp_path / name) is None
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and all("not a regular file" in line and name in line for line in err)


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_a_symlink_in_place_of_a_model_cache_file_is_retrained_and_left_alone(cache, capsys):
    """The weights are trained (the link's target is no cache file) and not written through the link."""
    recipe = zoo.asdict(zoo.recipe(NAME))
    (cache / "models").mkdir()
    entry = cache / "models" / f"{NAME}-{zoo.recipe(NAME).digest()[:16]}.pt"
    entry.symlink_to("/dev/null")
    model, data = zoo.load(NAME)
    err = capsys.readouterr().err.splitlines()
    assert "not a regular file" in err[0] and "symbolic link" in err[-1] and entry.is_symlink()
    assert accuracy(model, data.x_test, data.y_test) >= 0.95 and load_cached(entry, recipe) is None
