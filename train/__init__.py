"""vidcurate's trainer: a text-to-video diffusion model (flow matching on VAE latents) trained straight
from the WebDataset shards `python -m curate pack` writes; `python -m train` runs it.

Modules: `config` the settings, `latents` the latent-sample format, `flow` noising and timesteps,
`distributed` torchrun ranks, `checkpoint` the run folder's checkpoints, `lora` LoRA adapters and
their diffusers export, `models` the model families behind one interface, `data` the streaming
loader, `sampler` validation videos, `precompute` latent shards, `trainer` the training loop,
`__main__` the command lines.

Imports, lowest first: a module imports train modules of the lines above it only, so none is in a cycle.

    config, latents, flow, distributed, checkpoint, lora   (import no train module)
    models.family -> models.wan -> models              (the package finds its family modules)
    data (config, latents); sampler (flow, models)
    precompute (config, data, latents, models)
    trainer (checkpoint, config, data, distributed, flow, lora, models, sampler)
    __main__ (config, checkpoint, precompute, trainer; inside its functions, so --help stays quick)

From curate, train imports these modules and no others (curate.config and the stages stay the
pipeline's): curate.errors (UserError and its kinds), curate.console (a closed stdout),
curate.settings (YAML files and --set), curate.storage (local and object-store paths, atomic
writes), curate.picture (frames as players show them), curate.shards (the WebDataset format),
curate.models.hub (devices, model weights), curate.models.tiny_vlm (the caption text of `tiny`).
"""
