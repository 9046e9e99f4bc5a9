"""Head start without dose: survey pre-training (pretrain.py) and transfer from an earlier run (transfer.py)."""
from __future__ import annotations

import json
import os

import h5py
import numpy
import pytest
import torch

from dkl4dstem.models import pretrain
from dkl4dstem.cli import main
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError
from dkl4dstem.experiment import Experiment, StepEvent
from dkl4dstem.models.dkl import DKLModel
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.instruments.replay import open_replay
from dkl4dstem.models.trainer import BackgroundTrainer
from dkl4dstem.models.transfer import load_transfer


def _region(graphene_path: str, tmp_path, rows: slice, name: str) -> str:
    """A region of the shipped graphene scan as its own dataset (the same sample, another place)."""
    source = numpy.load(graphene_path)
    arrays = {key: source[key] for key in source.files}
    for key, value in list(arrays.items()):
        if value.ndim >= 2 and value.shape[:2] == (32, 32):
            arrays[key] = value[rows]
    path = os.path.join(tmp_path, name)
    numpy.savez(path, **arrays)
    return path


@pytest.mark.parametrize("method", pretrain.METHODS)
def test_pretraining_gives_a_reproducible_standardized_embedding(graphene_path: str, method: str) -> None:
    patches = extract_patches(numpy.load(graphene_path)["survey"], 12)
    embeddings = []
    for _ in range(2):
        model = DKLModel(patches.shape[1], seed=4)
        report = pretrain.pretrain(model, patches, seed=4, method=method, iterations=150)
        print(method, report)
        embeddings.append(model.embed(patches).numpy())
    z = embeddings[0]
    numpy.testing.assert_array_equal(z, embeddings[1])
    numpy.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-3)
    numpy.testing.assert_allclose(z.std(axis=0), pretrain.LATENT_STD, rtol=1e-3)
    if method == "pca":  # the embedding follows the leading principal components of the centre-weighted patches
        weighted = torch.as_tensor(patches) * pretrain.centre_weights(patches.shape[1])
        scores = pretrain.pca_scores(weighted, 2).numpy()
        correlation = [abs(numpy.corrcoef(z[:, k], scores[:, k])[0, 1]) for k in range(2)]
        print("correlation with the PCA scores", correlation)
        assert min(correlation) > 0.9


def test_pretrained_embedding_singles_out_the_strongest_deflections(graphene_path: str) -> None:
    """Without any measured value, the first pre-trained latent coordinate ranks the top-1% |CoM| positions (all at
    Si sites) above the rest, and the spread seed points reach them: why pre-training shortens the search."""
    data = numpy.load(graphene_path)
    truth = numpy.hypot(*numpy.moveaxis(data["abtem_com_mrad"], -1, 0)).reshape(-1)
    top = truth >= numpy.quantile(truth, 0.99)
    patches = extract_patches(data["survey"], 12)
    model = DKLModel(patches.shape[1], seed=0)
    pretrain.pretrain(model, patches, seed=0)
    z = model.embed(patches).numpy()
    auc = float((z[top, 0][:, None] > z[~top, 0][None, :]).mean())
    auc = max(auc, 1 - auc)  # the sign of a principal component is arbitrary
    first = int(numpy.random.default_rng(0).permutation(len(patches))[0])
    spread = pretrain.spread_points(torch.as_tensor(z), 10, first)
    print("AUC of latent 0 for the top 1%:", auc, "spread seed points", spread, "top among them", top[spread].sum())
    assert auc > 0.9
    assert top[spread].any()


def test_refits_restart_from_the_pretrained_weights(graphene_path: str) -> None:
    patches = extract_patches(numpy.load(graphene_path)["survey"], 12)
    trainer = BackgroundTrainer(patches, ExperimentConfig(seed=2))
    random_state = {k: v.clone() for k, v in trainer.model.net.state_dict().items()}
    trainer.start_pretraining()
    trainer.join()
    assert not trainer.failures
    pretrained = {k: v.clone() for k, v in trainer.model.net.state_dict().items()}
    assert not torch.equal(pretrained["0.weight"], random_state["0.weight"])
    rng = numpy.random.default_rng(2)
    indices = [int(i) for i in rng.choice(len(patches), 12, replace=False)]
    print("indices", indices)
    trainer.fit_now(indices, [float(v) for v in rng.normal(size=12)], iterations=20)
    assert not torch.equal(trainer.model.net.state_dict()["0.weight"], pretrained["0.weight"])
    trainer.model.load_state(trainer.model._initial_state)  # what a refit from the initial weights starts from
    for key, value in pretrained.items():
        torch.testing.assert_close(trainer.model.net.state_dict()[key], value)


@pytest.mark.slow
def test_transfer_chooses_the_first_position_without_seed_points(graphene_path: str, tmp_path) -> None:
    """Source run on the top half, then the bottom half with --seeds 0: the transferred model picks at once."""
    top = _region(graphene_path, tmp_path, slice(0, 16), "top.npz")
    bottom = _region(graphene_path, tmp_path, slice(16, 32), "bottom.npz")
    source = os.path.join(tmp_path, "source")
    assert main(["run", top, "--out", source, "--seeds", "8", "--steps", "30", "--seed", "2", "--no-truth"]) == 0
    out = os.path.join(tmp_path, "transferred")
    assert main(["run", bottom, "--out", out, "--seeds", "0", "--steps", "5", "--init-from", source]) == 0
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    truth = numpy.hypot(*numpy.moveaxis(numpy.load(bottom)["abtem_com_mrad"], -1, 0))
    quantiles = [float((truth < truth[tuple(p)]).mean()) for p in summary["visited"]]
    print("positions", summary["visited"], "quantiles of |CoM| in the bottom half", quantiles)
    assert summary["phases"] == ["step"] * 5  # no seed point: every position chosen by the model
    # three random picks reach the top 5% with probability 0.14; the earlier run's model knows where |CoM| is high
    assert max(quantiles[:3]) > 0.95
    # the session keeps what a further transfer needs: model checkpoints and the patch standardization the network
    # was trained with (the source region's, which this run's patches were brought to)
    source_survey = numpy.load(top)["survey"].astype(numpy.float64)
    with h5py.File(os.path.join(out, "session.h5"), "r") as session:
        assert len(session["model"]) >= 1
        assert session["model"].attrs["patch_mean"] == pytest.approx(source_survey.mean(), rel=1e-5)
        assert session["model"].attrs["patch_std"] == pytest.approx(source_survey.std(), rel=1e-5)
        assert json.loads(session.attrs["settings"])["init_from"] == os.path.abspath(source)


@pytest.mark.slow
def test_init_from_bad_input_is_refused_before_any_dose(graphene_path: str, tmp_path, capsys) -> None:
    no_model = os.path.join(tmp_path, "no_model")  # seed points only: stopped before the first fit
    assert main(["run", graphene_path, "--out", no_model, "--seeds", "4", "--steps", "0", "--no-truth"]) == 0
    good = os.path.join(tmp_path, "good")
    assert main(["run", graphene_path, "--out", good, "--seeds", "5", "--steps", "3", "--no-truth"]) == 0
    corrupt = os.path.join(tmp_path, "corrupt.h5")
    with open(corrupt, "wb") as file:
        file.write(numpy.random.default_rng(0).bytes(4096))
    empty = os.path.join(tmp_path, "empty")
    os.makedirs(empty)
    capsys.readouterr()
    cases = {
        "missing": (["--init-from", os.path.join(tmp_path, "nowhere")], "no such file"),
        "directory without a session": (["--init-from", empty], "no session.h5"),
        "session without a model": (["--init-from", no_model], "no trained model"),
        "corrupt file": (["--init-from", corrupt], "not a readable dkl4dstem session"),
        "another window": (["--init-from", good, "--window", "10"], "window"),
        "another scalarizer": (["--init-from", good, "--scalarizer", "vbf"], "scalarizer"),
        "zero seeds without a model": (["--seeds", "0"], "--init-from"),
    }
    for name, (extra, expected) in cases.items():
        out = os.path.join(tmp_path, "out_" + name.replace(" ", "_"))
        code = main(["run", graphene_path, "--out", out, "--steps", "3", *extra])
        err = capsys.readouterr().err
        print(name, code, err.strip())
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
        assert not os.path.exists(os.path.join(out, "session.h5"))  # nothing measured, nothing written
    # another latent size (no CLI flag: the library refuses it in the experiment set-up, before measuring)
    instrument = open_replay(graphene_path)
    config = ExperimentConfig(seeds=0, steps=3, latent_dim=3, init_from=good)
    measured: list[StepEvent] = []
    with pytest.raises(InputError, match="latent_dim"):
        Experiment(instrument, config, on_event=measured.append).run()
    assert measured == []  # one event per measurement: none



def test_a_short_run_transfers_its_model_and_points(graphene_path: str, tmp_path) -> None:
    """The fast tier's transfer check (the CLI and region ones are slow): a 4 + 2 point run's session carries its
    model and points into a run with no seed point; a model of another window is refused before any dose."""
    fast = {"initial_iterations": 30, "update_iterations": 5, "refit_iterations": 20, "window": 8}
    source = str(tmp_path / "source.h5")
    first = Experiment(open_replay(graphene_path), ExperimentConfig(seeds=4, steps=2, **fast),
                       session_path=source).run()
    assert first.error is None and len(first.visited) == 6
    transfer = load_transfer(source, ExperimentConfig(**fast))
    assert len(transfer.values) == 6 and transfer.patches.shape == (6, 64)
    numpy.testing.assert_allclose(sorted(transfer.values), sorted(first.values))
    with pytest.raises(InputError, match="window"):
        load_transfer(source, ExperimentConfig(**{**fast, "window": 10}))
    second = Experiment(open_replay(graphene_path), ExperimentConfig(seeds=0, steps=2, init_from=source, **fast)).run()
    assert second.error is None and second.phases == ["step", "step"] and len(second.visited) == 2
