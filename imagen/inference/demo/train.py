"""Train `imagen-demo` and its striped-style LoRA from nothing, on pictures drawn by `shapes.py`.

    python -m imagen.inference.demo.train --out DIR [--seed N] [--threads T] [--device cpu|cuda]

Three stages, each seeded: (1) the VAE (SD's AutoencoderKL layout with 3 levels, so 64x64 pictures become 16x16x4
latents) learns to reconstruct 32x32 crops; (2) the UNet and a 2-layer CLIP text encoder (the real CLIP BPE tokenizer)
learn v-prediction on the latents of captioned pictures, with 10% of captions dropped so classifier-free guidance
works; (3) a rank-8 LoRA on the frozen UNet learns the same captions drawn striped. The result is a diffusers
StableDiffusionPipeline folder (DIR/imagen-demo) and a diffusers-format LoRA file (DIR/loras/), plus training.json
with the losses, the wall and CPU seconds of each stage and a quick held-out evaluation.

Why v-prediction on a zero-terminal-SNR schedule (SD 2.x's objective, "Common Diffusion Noise Schedules and Sample
Steps are Flawed", Lin et al. 2024): these pictures are mostly one flat colour, and SD 1.x's schedule leaves a little
of that colour in the noisiest training inputs. A model trained on it learns to read the background from that leak
instead of from the prompt, and at generation time, starting from pure noise, draws a background at random (the first
run's background accuracy was chance). With no signal left at the last step the colour can only come from the text,
and v-prediction makes the noisiest steps a prediction of the picture itself, where layout and colours are decided.

Deterministic: python's and torch's generators are seeded, deterministic algorithms are on, the data set is a
function of the seed. On the same torch build, CPU and thread count, a rerun gives the same weights; across machines
float reductions may differ in the last bits, which moves the evaluation figures by a point or two, not more.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from imagen.inference.clip_tokenizer import VOCAB_SIZE, clip_tokenizer
from imagen.inference.demo.shapes import SIZE, judge, random_scene, render_with_mask
from imagen.inference.runtime import quiet_libraries

DEMO_NAME = "imagen-demo"
LORA_NAME = "imagen-demo-striped"
DEFAULTS = {"seed": 1234, "images": 12000, "vae_steps": 2500, "unet_steps": 9000, "lora_steps": 400}
LATENT_FACTOR = 4  # 64x64 pictures -> 16x16 latents: small shapes keep their outline
_TEXT_DIM = 64
# The prompt's token window. The demo's captions are at most 14 tokens with BOS and EOS; in SD's 77-token window each
# word was 1/77 of every cross-attention at the start and position and shape colour were never learnt (see the card).
TEXT_TOKENS = 16
_BATCH = 32
_MIN_SNR_GAMMA = 5.0
FOREGROUND_WEIGHT = 3.0


def build_models() -> tuple[Any, Any, Any]:
    """(vae, unet, text_encoder), freshly initialised from torch's current seed."""
    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        norm_num_groups=2, layers_per_block=1, sample_size=SIZE, mid_block_add_attention=False,
    )
    latent = SIZE // LATENT_FACTOR
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_DIM, attention_head_dim=4, norm_num_groups=8,
        # A global text path: the prompt, pooled, joins the timestep embedding every ResNet block receives. Without
        # it the UNet could not learn the picture from the prompt at the noisiest step (pure noise in): trained there
        # alone for 150 steps its error stayed at 1.0 (0.76 with the path), so layouts were left to chance.
        addition_embed_type="text",
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=_TEXT_DIM, intermediate_size=2 * _TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407,
    ))
    start_text_encoder_as_identity(text_encoder)
    return vae, unet, text_encoder


def start_text_encoder_as_identity(text_encoder: Any) -> None:
    """Each output token starts as its own word, normalised: large word embeddings, small position embeddings, and
    every layer's residual branches zeroed so the layers begin as the identity. From CLIP's default start (word and
    position embeddings of one size, every token a blend of its context) the encoder first learnt to carry the
    background, the caption's last words, and position never reached the UNet; from this start it did in 300 steps."""
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers moved the modules up a level in 5.x
    with torch.no_grad():
        model.embeddings.token_embedding.weight.normal_(0.0, 1.0)
        model.embeddings.position_embedding.weight.normal_(0.0, 0.1)
        for layer in model.encoder.layers:
            for branch in (layer.self_attn.out_proj, layer.mlp.fc2):
                branch.weight.zero_()
                branch.bias.zero_()


SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
            "steps_offset": 1}


def scheduler() -> Any:
    """What the pipeline ships with; every sampler the runtime offers is built from this config, so it keeps the
    prediction type and the zero-SNR schedule."""
    return EulerDiscreteScheduler(**SCHEDULE)


def training_alphas() -> Any:
    """The schedule's cumulative alphas, the last one exactly 0 (pure noise)."""
    return DDPMScheduler(**SCHEDULE).alphas_cumprod.clone()


def dataset(seed: int, count: int, style: str) -> tuple[Any, Any, list[str]]:
    """`count` pictures (uint8, N x 3 x 64 x 64), the shapes' masks (bool, N x 1 x 64 x 64) and the captions, a
    function of `seed` alone."""
    rng = random.Random(f"{seed}-{style}")
    pictures = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    masks = np.empty((count, 1, SIZE, SIZE), dtype=bool)
    captions = []
    for i in range(count):
        scene = random_scene(rng, style)
        picture, mask = render_with_mask(scene, rng)
        pictures[i], masks[i, 0] = np.asarray(picture), np.asarray(mask) > 127
        captions.append(scene.caption(rng))
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks), captions


def pixel_weights(masks: Any) -> Any:
    """Per-latent-pixel loss weights: 1 on the background, 1 + FOREGROUND_WEIGHT on the shape (its share of each
    latent pixel). A shape covers 5-15% of a picture; unweighted, the loss is spent on the background, and 1,100
    steps left shapes missing while the background colour was right after 200."""
    share = torch.nn.functional.avg_pool2d(masks.float(), LATENT_FACTOR)
    return 1.0 + FOREGROUND_WEIGHT * share


def _to_float(images: Any) -> Any:
    return images.float() / 127.5 - 1.0


def _lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class Clock:
    """Wall and CPU seconds of each stage, and a progress line every `every` steps."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report, self.stages = report, {}

    def run(self, name: str, steps: int, step_fn: Callable[[int], float], every: int = 50) -> list[float]:
        wall, cpu = time.perf_counter(), time.process_time()
        losses: list[float] = []
        window: list[float] = []
        for step in range(steps):
            window.append(step_fn(step))
            if (step + 1) % every == 0 or step + 1 == steps:
                losses.append(round(sum(window) / len(window), 5))
                window = []
                self.report(f"{name}: {step + 1}/{steps} loss {losses[-1]:.4f} "
                            f"({time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s cpu)")
        self.stages[name] = {"steps": steps, "wall_seconds": round(time.perf_counter() - wall, 1),
                             "cpu_seconds": round(time.process_time() - cpu, 1), "losses": losses}
        return losses


def train_vae(vae: Any, images: Any, steps: int, gen: Any, clock: Clock, device: str) -> None:
    """Reconstruction (MSE + a very small KL term) on 32x32 crops at multiples of the latent factor: the VAE is
    convolutional, so crops teach it what whole pictures would, at a quarter of the cost."""
    opt = torch.optim.AdamW(vae.parameters(), lr=4e-3, weight_decay=0.0)
    with torch.no_grad():  # start with a small posterior variance, or the decoder first sees only noise
        vae.quant_conv.bias[vae.config.latent_channels:] -= 8.0
    vae.train()
    offsets = (SIZE - 32) // LATENT_FACTOR + 1

    def step(i: int) -> float:
        idx = torch.randint(0, images.shape[0], (32,), generator=gen)
        oy, ox = (int(v) * LATENT_FACTOR for v in torch.randint(0, offsets, (2,), generator=gen))
        x = _to_float(images[idx, :, oy:oy + 32, ox:ox + 32]).to(device)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        for group in opt.param_groups:
            group["lr"] = _lr(i, steps, 4e-3)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    clock.run("vae", steps, step)
    vae.eval()


def encode(vae: Any, images: Any, device: str) -> Any:
    """Posterior means of every picture (unscaled)."""
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], 256):
            out.append(vae.encode(_to_float(images[start:start + 256]).to(device)).latent_dist.mean.cpu())
    return torch.cat(out)


def tokenize(tokenizer: Any, captions: list[str]) -> Any:
    return tokenizer(captions, padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                     return_tensors="pt").input_ids


def train_denoiser(unet: Any, text_encoder: Any | None, latents: Any, weights: Any, ids: Any, empty_ids: Any,
                   steps: int,
                   gen: Any, clock: Clock, device: str, *, name: str, params: list[Any], lr: float,
                   text_lr: float | None = None, drop: float = 0.1, frozen_text: Any = None,
                   probe: Callable[[int], None] | None = None, probe_every: int = 0) -> None:
    """v-prediction on the zero-terminal-SNR schedule, `drop` of the captions replaced by the empty one. Losses are
    weighted min(SNR + 1, 5) / (SNR + 1) (min-SNR weighting for v, kept at 1 where the noise dominates), so the
    nearly clean steps, which are easy and many, do not drown out the noisy ones that decide the layout."""
    alphas = training_alphas().to(device)
    groups = [{"params": params, "peak": lr}]
    if text_encoder is not None:  # the text encoder learns from nothing too, and faster than the UNet can use it
        groups.append({"params": list(text_encoder.parameters()), "peak": text_lr or lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    every = [p for group in groups for p in group["params"]]
    unet.train()

    def step(i: int) -> float:
        idx = torch.randint(0, latents.shape[0], (_BATCH,), generator=gen)
        x0 = latents[idx].to(device)
        tokens = ids[idx].clone()
        dropped = torch.rand(_BATCH, generator=gen) < drop
        tokens[dropped] = empty_ids
        # Timesteps drawn with density rising linearly toward pure noise: where the layout is decided.
        t = (1000 * torch.rand(_BATCH, generator=gen).sqrt()).long().clamp(max=999)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = alphas[t.to(device)].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        snr = (a / (1 - a).clamp(min=1e-8)).view(-1)
        weight = (snr + 1).clamp(max=_MIN_SNR_GAMMA) / (snr + 1)
        encode_text = frozen_text if text_encoder is None else (lambda ids: text_encoder(ids)[0])
        context = encode_text(tokens.to(device))
        pred = unet(noisy, t.to(device), encoder_hidden_states=context).sample
        loss = (weight * (weights[idx].to(device) * (pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
        for group in opt.param_groups:
            group["lr"] = _lr(i, steps, group["peak"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(every, 1.0)
        opt.step()
        if probe and probe_every and (i + 1) % probe_every == 0 and i + 1 < steps:
            unet.eval()
            probe(i + 1)  # reads the weights only: the generators and the training path are untouched
            unet.train()
        return float(loss.detach())

    clock.run(name, steps, step)
    unet.eval()


def quick_eval(pipe: Any, count: int = 96, seed: int = 4321, steps: int = 20, guidance: float = 7.0,
               batch: int = 32) -> dict[str, float]:
    """Held-out accuracy straight through the diffusers pipeline, batched (the benchmark goes through the runtime,
    one prompt at a time; this is the figure training prints and records)."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    hits = {"background": 0, "colour": 0, "shape": 0, "position": 0}
    for start in range(0, count, batch):
        part = scenes[start:start + batch]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(part))]
        with torch.no_grad():
            images = pipe([s.caption() for s in part], height=SIZE, width=SIZE, num_inference_steps=steps,
                          guidance_scale=guidance, generator=generators).images
        for scene, image in zip(part, images, strict=True):
            for key, ok in judge(image).score(scene).items():
                hits[key] += ok
    return {key: round(100 * value / count, 1) for key, value in hits.items()}


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2"]


def train(out: Path, *, seed: int = DEFAULTS["seed"], images: int = DEFAULTS["images"],
          vae_steps: int = DEFAULTS["vae_steps"], unet_steps: int = DEFAULTS["unet_steps"],
          lora_steps: int = DEFAULTS["lora_steps"], threads: int = 2, device: str = "cpu",
          eval_count: int = 96, probe_every: int = 0, report: Callable[[str], None] = print) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    clock = Clock(report)

    t0 = time.perf_counter()
    plain, plain_masks, captions = dataset(seed, images, "plain")
    striped, striped_masks, striped_captions = dataset(seed, images // 4, "striped")
    report(f"data: {len(captions)} plain + {len(striped_captions)} striped pictures "
           f"({time.perf_counter() - t0:.0f} s)")

    vae, unet, text_encoder = build_models()
    vae, unet, text_encoder = vae.to(device), unet.to(device), text_encoder.to(device)
    train_vae(vae, torch.cat([plain, striped]), vae_steps, gen, clock, device)

    raw = encode(vae, plain, device)
    shift, scale = float(raw.mean()), float(1.0 / raw.std())
    vae.register_to_config(scaling_factor=scale)
    report(f"latents: mean {shift:.3f}, scaling factor {scale:.3f}")
    latents, striped_latents = raw * scale, encode(vae, striped, device) * scale

    tokenizer = copy.deepcopy(clip_tokenizer("clip_l"))  # the shared one keeps SD's 77
    tokenizer.model_max_length = TEXT_TOKENS  # saved with the pipeline: the runtime and compel chunk prompts by it
    ids, striped_ids = tokenize(tokenizer, captions), tokenize(tokenizer, striped_captions)
    empty_ids = tokenize(tokenizer, [""])[0]
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    def probe(step: int) -> None:
        report(f"unet step {step}: held-out accuracy (32 prompts) {quick_eval(pipe, count=32)}")

    text_encoder.train()
    train_denoiser(unet, text_encoder, latents, pixel_weights(plain_masks), ids, empty_ids, unet_steps, gen, clock,
                   device, name="unet", params=list(unet.parameters()), lr=1.5e-3, text_lr=4e-3,
                   probe=probe, probe_every=probe_every)
    text_encoder.eval()
    target = out / DEMO_NAME
    pipe.save_pretrained(target, safe_serialization=True)
    accuracy = quick_eval(pipe, count=eval_count) if eval_count else {}
    report(f"held-out accuracy ({eval_count} prompts, guidance 7): {accuracy}")

    # The LoRA: the base stays frozen (the text encoder too: its embeddings are computed once per batch).
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    lora_params = [p for p in unet.parameters() if p.requires_grad]

    def frozen_text(tokens: Any) -> Any:
        with torch.no_grad():
            return text_encoder(tokens)[0]

    train_denoiser(unet, None, striped_latents, pixel_weights(striped_masks), striped_ids, empty_ids, lora_steps,
                   gen, clock, device, name="lora", params=lora_params, lr=2e-3, frozen_text=frozen_text)
    lora_dir = out / "loras"
    lora_dir.mkdir(parents=True, exist_ok=True)
    # PEFT's own key names: diffusers' converter renames only the attention layers' keys, and a file mixing both
    # namings loads without its attention layers (peft warns, and the style comes only from the convolutions).
    state = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(lora_dir, unet_lora_layers=state, weight_name=f"{LORA_NAME}.safetensors",
                                              safe_serialization=True)
    declare_base_model(lora_dir / f"{LORA_NAME}.safetensors")

    summary = {
        "seed": seed, "images": images, "threads": threads, "device": device, "latent_scaling_factor": scale,
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "stages": clock.stages, "held_out_accuracy": accuracy,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(f"done: {summary['wall_seconds']} s wall, {summary['cpu_seconds']} s cpu -> {out}")
    return summary


def declare_base_model(lora_file: Path) -> None:
    """Write Kohya's base-model key into the LoRA's metadata: its key names alone read as SDXL (this UNet has
    attention in up_blocks 0, like SDXL's and unlike SD 1.x's), and uploads are matched to checkpoints by family."""
    tensors = load_file(lora_file)
    save_file(tensors, lora_file, metadata={"format": "pt", "ss_base_model_version": "sd_v1"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write imagen-demo/ and loras/ into")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--images", type=int, default=DEFAULTS["images"])
    parser.add_argument("--vae-steps", type=int, default=DEFAULTS["vae_steps"])
    parser.add_argument("--unet-steps", type=int, default=DEFAULTS["unet_steps"])
    parser.add_argument("--lora-steps", type=int, default=DEFAULTS["lora_steps"])
    parser.add_argument("--eval-count", type=int, default=96, help="held-out prompts judged after training (0: none)")
    parser.add_argument("--probe-every", type=int, default=0, help="judge 32 prompts every N UNet steps (0: never)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    quiet_libraries()
    train(args.out, seed=args.seed, images=args.images, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
          lora_steps=args.lora_steps, threads=args.threads, device=args.device, eval_count=args.eval_count,
          probe_every=args.probe_every)


if __name__ == "__main__":
    main()
