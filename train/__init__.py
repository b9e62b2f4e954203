"""vidcurate's trainer: a text-to-video diffusion model (flow matching on VAE latents) trained straight
from the WebDataset shards `python -m curate pack` writes; `python -m train` runs it.

Modules: `config` the settings, `buckets` the training shapes a clip can go to, `latents` the
latent-sample format, `flow` noising and timesteps, `distributed` torchrun ranks, `checkpoint` the
run folder's checkpoints, `lora` LoRA adapters and their diffusers export, `offload` block-wise
CPU offload of a frozen base, `models` the model families behind one interface, `data` the
streaming loader, `sampler` sample videos, `validation` the validation loss, `precompute` latent
shards, `trainer` the training loop, `__main__` the command lines.

Imports, lowest first: a module imports train modules of the lines above it only, so none is in a cycle.

    buckets; config (buckets); latents, flow, distributed, checkpoint, lora, offload   (no other train module)
    models.family -> models.wan -> models              (the package finds its family modules)
    data (buckets, config, latents); sampler (flow, models)
    precompute (buckets, config, data, latents, models); validation (buckets, config, data, flow, models, sampler)
    trainer (buckets, checkpoint, config, data, distributed, flow, lora, offload, models, sampler, validation)
    __main__ (config, checkpoint, precompute, trainer; inside its functions, so --help stays quick)

From curate, train imports these modules and no others (curate.config and the stages stay the
pipeline's): curate.errors (UserError and its kinds), curate.console (a closed stdout),
curate.settings (YAML files and --set), curate.storage (local and object-store paths, atomic
writes), curate.picture (frames as players show them), curate.shards (the WebDataset format),
curate.models.hub (devices, model weights), curate.models.tiny_vlm (the caption text of `tiny`).
"""
