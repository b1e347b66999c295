"""The statistical model under every fit: observables, noise models and the likelihood.

- :mod:`.observation`: what each CSV column measures, from the solved states;
- :mod:`.noise`: the noise models (one module each, a registry);
- :mod:`.objective`: the training objective and the likelihood, in torch, for every engine.

Nothing is imported here, so that resolving a config does not import torch.
"""
