"""Augmenters for the ``augmented`` feed (DDA): a diffusion pipeline from Hugging Face
``diffusers``, or a classical augmentation (RandAugment) in its place.

An augmenter maps uint8 images ``[N, C, H, W]`` to ``k`` variations of each, grouped by
source image (``[N * k, C, H, W]``, uint8, on the images' device), and is a pure function
of (image, its ``identity``, per-output seeds): the harness's cache (``store.ImageCache``)
keys its results by a hash of the three (``cache_key``), so an image is never augmented
twice. Every output is quantised to uint8, as the image files of the reference code are,
so a cached result and a fresh one are the same bytes.

``diffusers`` is optional (``pip install -e ".[dda]"``) and imported only when a
diffusion augmenter is built.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .errors import UserError

INSTALL_HINT = 'pip install -e ".[dda]"'
PIPELINES = ("variation", "img2img")


def to_uint8(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] floats to uint8 pixels (rounded, clamped)."""
    return (x01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def cache_key(identity: dict[str, Any], image: torch.Tensor) -> str:
    """sha256 of the augmenter's identity (pipeline and settings) and one uint8 image."""
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    h.update(str(tuple(image.shape)).encode())
    h.update(image.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def output_seeds(key: str, k: int) -> list[int]:
    """The seeds of an image's ``k`` outputs, from its cache key: the same image gives the
    same variations in any run, resumed or not, on any device."""
    base = int(key[:15], 16)
    return [base + j for j in range(k)]


class Augmenter:
    """Base class; see the module docstring. ``cost_name`` names the work in the run's
    cost counter ("" for work too small to count); ``flops_per_output`` is measured on the
    first call that computes anything."""

    name = ""
    cost_name = ""
    cacheable = False

    def __init__(self, k: int):
        self.k = k
        self.flops_per_output = 0
        self.calls = 0  # batches computed (tests count them)

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        """How a table names this augmentation."""
        return self.name

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None, seeds: Sequence[Sequence[int]],
                 class_names: Sequence[str] = ()) -> torch.Tensor:
        self.calls += 1
        if self.cost_name and not self.flops_per_output:
            with FlopCounterMode(display=False) as counter:
                out = self._augment(images, labels, seeds, class_names)
            self.flops_per_output = int(counter.get_total_flops()) // max(1, len(out))
            return out
        return self._augment(images, labels, seeds, class_names)

    def _augment(self, images, labels, seeds, class_names) -> torch.Tensor:
        raise NotImplementedError


class ClassicalAugmenter(Augmenter):
    """torchvision's RandAugment (Cubuk et al., 2020), ``ops`` random operations of
    magnitude ``magnitude`` (of 30) per output, each output from its own seed. Cheap
    enough that a cache would cost more than it saves."""

    name = "RandAugment"

    def __init__(self, k: int, ops: int = 2, magnitude: int = 9):
        super().__init__(k)
        from torchvision.transforms import v2
        self.ops, self.magnitude = ops, magnitude
        self.transform = v2.RandAugment(num_ops=ops, magnitude=magnitude)

    def identity(self) -> dict[str, Any]:
        return {"augmenter": "randaugment", "k": self.k, "ops": self.ops, "magnitude": self.magnitude}

    def describe(self) -> str:
        return f"RandAugment x{self.k}"

    def _augment(self, images, labels, seeds, class_names):
        outs = []
        for image, image_seeds in zip(images, seeds):
            for seed in image_seeds:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    outs.append(self.transform(image))
        return torch.stack(outs)


def model_fingerprint(model: str) -> str:
    """What identifies a pipeline's weights cheaply: for a local directory, a hash of its
    JSON configs and of its weight files' names and sizes; for a hub id, the id."""
    path = Path(model)
    if not path.is_dir():
        return model
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode())
        h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def require_diffusers(who: str = "dda") -> None:
    """A one-line UserError unless ``diffusers`` (and ``transformers``) import."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(f"{who}: augment=diffusion needs the optional packages diffusers and transformers "
                        f"({exc.name} is missing): {INSTALL_HINT}; or choose --set {who}.augment=classical|none") \
            from None


def check_model(model: str, who: str = "dda") -> None:
    """The model must be given; a path that looks local must be a directory; a hub id is
    accepted only where the hub may be reached (not under HF_HUB_OFFLINE=1)."""
    if not model:
        raise UserError(f"{who}: augment=diffusion needs a diffusers pipeline: --set {who}.model=<local directory> "
                        f"(e.g. a download of lambdalabs/sd-image-variations-diffusers); or choose "
                        f"--set {who}.augment=classical|none")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{who}: model={model} has no model_index.json; expected a diffusers pipeline "
                            "directory (as save_pretrained writes it)")
        return
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model) is not None
    if not hub_id or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise UserError(f"{who}: model={model} is not a directory; expected a local diffusers pipeline directory"
                        + (" (HF_HUB_OFFLINE is set, so hub ids are not fetched)" if hub_id else ""))


class DiffusionAugmenter(Augmenter):
    """A Stable Diffusion pipeline of ``diffusers``:

    - ``variation``: ``StableDiffusionImageVariationPipeline`` (the model DDA's paper
      links, lambdalabs/sd-image-variations-diffusers): new images from the CLIP image
      embedding of the source, from pure noise (``strength`` does not apply);
    - ``img2img``: ``StableDiffusionImg2ImgPipeline`` (Stable Diffusion 2 weights): the
      source noised to ``strength`` and denoised under ``prompt`` (``{label}`` is the
      source's class name).

    Images are resized (bicubic, antialiased) to the pipeline's resolution and the
    outputs back to the source's. ``batch`` sources go through the pipeline at once,
    ``k`` outputs each; on CUDA under ``dtype`` fp16 (``auto``), on the CPU in fp32.
    The safety checker is off: it would black out synthetic images it misreads.
    """

    cost_name = "diffusion"
    cacheable = True

    def __init__(self, model: str, kind: str, k: int, device: torch.device, steps: int, guidance: float,
                 strength: float, prompt: str, batch: int, dtype: str = "auto"):
        super().__init__(k)
        require_diffusers()
        check_model(model)
        import diffusers
        cls = (diffusers.StableDiffusionImageVariationPipeline if kind == "variation"
               else diffusers.StableDiffusionImg2ImgPipeline)
        if dtype == "auto":
            dtype = "fp16" if device.type == "cuda" else "fp32"
        torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        local = Path(model).expanduser().is_dir()
        quiet()
        # diffusers 0.35 renamed torch_dtype to dtype
        dtype_kw = "dtype" if _version(diffusers.__version__) >= (0, 35) else "torch_dtype"
        try:
            pipe = cls.from_pretrained(str(Path(model).expanduser()) if local else model, **{dtype_kw: torch_dtype},
                                       local_files_only=local, safety_checker=None, requires_safety_checker=False)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise UserError(f"dda: cannot load a {cls.__name__} from {model}: "
                            f"{str(exc).splitlines()[0][:300]}") from None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.kind, self.model, self.device, self.dtype = kind, model, device, dtype
        self.steps, self.guidance, self.strength, self.prompt, self.batch = steps, guidance, strength, prompt, batch
        self.resolution = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.name = f"{cls.__name__}"
        self.fingerprint = model_fingerprint(str(Path(model).expanduser()) if local else model)

    def identity(self) -> dict[str, Any]:
        ident = {"augmenter": f"diffusion-{self.kind}", "model": self.fingerprint, "k": self.k, "steps": self.steps,
                 "guidance": self.guidance, "resolution": self.resolution, "dtype": self.dtype}
        if self.kind == "img2img":
            ident.update(strength=self.strength, prompt=self.prompt)
        return ident

    def describe(self) -> str:
        return f"diffusion {self.kind} x{self.k}"

    def _augment(self, images, labels, seeds, class_names):
        outs = []
        for i in range(0, len(images), self.batch):
            outs.append(self._batch(images[i:i + self.batch], None if labels is None else labels[i:i + self.batch],
                                    seeds[i:i + self.batch], class_names))
        return torch.cat(outs)

    def _batch(self, images, labels, seeds, class_names):
        h, w = images.shape[-2:]
        x = images.to(self.device).float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = (self.resolution, self.resolution)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        generators = [torch.Generator("cpu").manual_seed(s) for image_seeds in seeds for s in image_seeds]
        common = dict(num_inference_steps=self.steps, guidance_scale=self.guidance, num_images_per_prompt=self.k,
                      generator=generators, output_type="pt", height=self.resolution, width=self.resolution)
        if self.kind == "variation":
            pixels = self.pipe.feature_extractor(images=list(x.cpu()), do_rescale=False,
                                                 return_tensors="pt").pixel_values
            out = self.pipe(image=pixels.to(self.device), **common).images
        else:
            names = [class_names[int(c)] if labels is not None and class_names else "" for c in
                     (labels if labels is not None else [0] * len(x))]
            prompts = [self.prompt.replace("{label}", n) for n in names]
            del common["height"], common["width"]
            out = self.pipe(prompt=prompts, image=x, strength=self.strength, **common).images
        out = torch.as_tensor(out).float().to(self.device)
        if out.ndim == 4 and out.shape[-1] in (1, 3) and out.shape[1] not in (1, 3):
            out = out.permute(0, 3, 1, 2)
        out = F.interpolate(out, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        if images.shape[1] == 1:
            out = out.mean(1, keepdim=True)
        return to_uint8(out).to(images.device)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def quiet() -> None:
    """No loading bars or notices from diffusers and transformers: the run's own
    progress is what the console shows."""
    import diffusers
    import transformers
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_tiny_pipeline(path: str | os.PathLike, kind: str = "variation", seed: int = 0,
                        sample_size: int = 16) -> Path:
    """A tiny, randomly initialised pipeline of ``kind`` saved to ``path`` (for tests and
    offline demos: it runs in seconds on a CPU and makes noise, not images). Needs the
    ``dda`` extra."""
    require_diffusers("build_tiny_pipeline")
    import diffusers
    quiet()
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3,
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  latent_channels=4, norm_num_groups=8, sample_size=sample_size * 2)
    scheduler = diffusers.PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    if kind == "variation":
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=32, patch_size=4))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        pipe = diffusers.StableDiffusionImageVariationPipeline(
            vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler, safety_checker=None,
            feature_extractor=processor, requires_safety_checker=False)
    elif kind == "img2img":
        from transformers import CLIPTextConfig, CLIPTextModel
        tokenizer = _tiny_clip_tokenizer(path)
        encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
        pipe = diffusers.StableDiffusionImg2ImgPipeline(
            vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    else:
        raise UserError(f"build_tiny_pipeline: kind={kind!r}; accepted: {', '.join(PIPELINES)}")
    path = Path(path)
    pipe.save_pretrained(path)
    return path


def _tiny_clip_tokenizer(path: str | os.PathLike):
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols, each alone and as a
    word end, and no merges: written next to ``path`` and loaded (no hub needed)."""
    from transformers import CLIPTokenizer

    # GPT-2's byte-to-symbol table (printable bytes map to themselves, the rest above 255)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>",
                                                                                  "<|endoftext|>"])}
    folder = Path(str(path) + "-tokenizer")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>", model_max_length=77)


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn``'s result and its wall-clock seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
