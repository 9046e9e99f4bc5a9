"""Record short replays of the shipped data as the behaviour the engine must keep (tests/test_behaviour.py).

Run from the repository root:  python resources/make_behaviour_fixture.py   (a few seconds per case)

For each case: the measured positions and values in order, and the final prediction / uncertainty maps' sums.
A refactoring must give the same; regenerate only when the behaviour changes on purpose (and say so in the
commit). Torch's float arithmetic can differ between CPU types, so the fixture belongs to the machine that runs
the suite (.ci/run).
"""
from __future__ import annotations

import json
import pathlib
import typing

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "behaviour_replay.json"
FAST = dict(initial_iterations=60, update_iterations=10, refit_every=10, refit_iterations=40)
# name -> (data file, ExperimentConfig fields): EI with the default pre-training, UCB minimizing without it
CASES: dict[str, tuple[str, dict[str, typing.Any]]] = {
    "ei_graphene_si_seed3": ("graphene_si.npz", dict(seeds=6, steps=10, seed=3, **FAST)),
    "ucb_min_graphene_10mrad_seed1": ("graphene_10mrad.npz", dict(seeds=5, steps=8, seed=1, acquisition="ucb",
                                                                   maximize=False, pretrain=False, **FAST)),
}


def run_case(data: str, fields: dict[str, typing.Any]) -> dict[str, typing.Any]:
    from dkl4dstem.experiment import Experiment, ExperimentConfig
    from dkl4dstem.instruments.replay import open_replay

    result = Experiment(open_replay(str(HERE / data)), ExperimentConfig(**fields)).run()
    assert result.error is None, result.error
    assert result.prediction is not None and result.uncertainty is not None
    return {"visited": [list(p) for p in result.visited], "values": result.values, "phases": result.phases,
            "prediction_sum": float(result.prediction.sum()), "uncertainty_sum": float(result.uncertainty.sum())}


def main() -> None:
    recorded = {name: {"data": data, "config": fields, **run_case(data, fields)}
                for name, (data, fields) in CASES.items()}
    OUT.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
