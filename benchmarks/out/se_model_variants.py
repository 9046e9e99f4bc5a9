"""Raw provenance of benchmarks/out/se_model_variants.jsonl: variants applied by monkeypatching the code of commit
5227f67 (spectrally normalized tanh net; `spectral_normalized` is gone since). Not maintained, not run by CI.

    python se_model_variants.py VARIANT DATA TARGET.npy SEEDS STEPS OUT.jsonl   (VARIANT e.g. relu+noisevar)
"""
import sys, json, time, math, numpy, gpytorch, torch
sys.path.insert(0, "/work/main/benchmarks")
from sample_efficiency import first_hit
import dkl4dstem.models.dkl as M
import dkl4dstem.models.trainer as T
from dkl4dstem.experiment import Experiment, ExperimentConfig
from dkl4dstem.instruments.replay import open_replay
from dkl4dstem.evaluation.groundtruth import nrmse
variant, path, tpath, seeds, steps, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
parts = set(variant.split("+"))
extra = {}
if "fresh" in parts:
    extra.update(refit_every=1, refit_iterations=200)
if "nosn" in parts or "relu" in parts:
    class FE(torch.nn.Sequential):
        def __init__(self, input_dim, latent_dim=2, hidden=(64, 32)):
            lin = (lambda a, b: M.spectral_normalized(torch.nn.Linear(a, b))) if "sn" in parts else torch.nn.Linear
            act = torch.nn.ReLU if "relu" in parts else torch.nn.Tanh
            hidden = (64, 64) if "relu" in parts else hidden
            layers, width = [], input_dim
            for size in hidden:
                layers += [lin(width, size), act()]; width = size
            layers.append(lin(width, latent_dim))
            super().__init__(*layers)
    M.FeatureExtractor = FE
orig = M.DKLModel.__init__
def init(self, *a, **k):
    orig(self, *a, **k)
    if "lnpriors" in parts:
        self.gp.covar_module.base_kernel.register_prior("ls_prior", gpytorch.priors.LogNormalPrior(0.0, 1.0), "lengthscale")
        self.gp.covar_module.register_prior("os_prior", gpytorch.priors.LogNormalPrior(0.0, 1.0), "outputscale")
        self.likelihood.register_prior("noise_prior", gpytorch.priors.LogNormalPrior(0.0, 1.0), "noise")
    if "zeromean" in parts:
        self.gp.mean_module = gpytorch.means.ZeroMean().to(torch.float64)
    self.optimizer = self._new_optimizer()
    self._initial_state = M.snapshot(self.state())
M.DKLModel.__init__ = init
if "zeromean" in parts:
    M.DKLModel.mean_constant = property(lambda self: 0.0)
if "noisevar" in parts:
    op = T.TrainedPosterior.predict
    def pred(self, fv):
        m, v, a, b = op(self, fv)
        return m, v + self.cache_noise, a, b
    T.TrainedPosterior.predict = pred
    oc = T.TrainedPosterior.__init__
    def tinit(self, cache, version, secs):
        oc(self, cache, version, secs); self.cache_noise = float(cache.noise)
    T.TrainedPosterior.__init__ = tinit
target = numpy.load(tpath).reshape(-1)
for seed in [int(s) for s in seeds.split(",")]:
    inst = open_replay(path); h, w = inst.scan_shape
    cps = {max(11, int(round(f * h * w))): f for f in (0.01, 0.025)}
    errs = {}
    def ev(e):
        if e.n_measured in cps and e.prediction is not None: errs[cps[e.n_measured]] = nrmse(e.prediction, target.reshape(h, w))
    t0 = time.time()
    res = Experiment(inst, ExperimentConfig(scalarizer="com_magnitude", **({"window": int(__import__("os").environ["WIN"])} if "WIN" in __import__("os").environ else {}), seeds=10, steps=steps, seed=seed, **extra), on_event=ev).run()
    rec = {"variant": variant, "data": path.split("/")[-1], "seed": seed, "hit": first_hit([y * w + x for y, x in res.visited], target),
           "n1": errs.get(0.01), "n25": errs.get(0.025), "s": round(time.time() - t0, 1)}
    print(json.dumps(rec), flush=True)
    open(out, "a").write(json.dumps(rec) + "\n")
