#!/usr/bin/env python3
"""Build easel's parity fixtures: tiny random-weight SD pipelines plus golden outputs.

For each kind in sd15, sd21, sd_turbo, sdxl, sdxl_turbo this writes tests/parity/<kind>/:

  model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/   (+ text_encoder_2/,
  tokenizer_2/ for the SDXL kinds): a Hugging Face hub-layout pipeline written by diffusers'
  own `save_pretrained(dir, safe_serialization=True)`, fp32, random weights from fixed seeds,
  each kind's real structure at a reduced size (see the *_UNET / VAE / CLIP configs below).
  golden.safetensors: reference tensors computed with torch fp32 on CPU from the pipeline as
  reloaded from disk (tokens, text encoder states, UNet and VAE outputs, scheduler trajectories).
  golden.json: prompts, timesteps, scheduler classes and configs, versions, a description, the
  shape, max |value| and the fp32-vs-fp64 deviation of every golden tensor.

Nothing is downloaded; the only input is CLIP's BPE merges file, which the PyPI wheel of
open-clip-torch ships (see README.md for the venv and that step). Run by hand, never in CI:

  V=.tools/parity
  nice -n 19 $V/bin/python scripts/parity/make_parity.py --bpe .tools/bpe_simple_vocab_16e6.txt.gz

Options: --out DIR (default tests/parity), --only KIND (repeatable), --check (also reload every
folder and run a 2-step pipeline call at 64x64). Rebuilds are byte-identical.
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

SEED = 20261205
KINDS = ["sd15", "sd21", "sd_turbo", "sdxl", "sdxl_turbo"]
XL_KINDS = {"sdxl", "sdxl_turbo"}

PROMPT = "a red fox jumping over a lazy dog, oil painting!"
NEGATIVE = ""
GUIDANCE = 7.5
TIMESTEPS = (999.0, 421.0)
SCHED_STEPS = 4
IMAGE_SIDE = 64  # pixels; 8x8 latents

# How the random init is reshaped so that outputs are O(0.1..1) and every weight matters:
QK_SCALE = 3.0  # attention query/key weights x3: softmax far from uniform (default init is almost flat)
CONST_NOISE = 0.1  # parameters initialised constant (norm weight 1 / bias 0, CLIP's zero biases) get +N(0, 0.1^2)

# ---------------------------------------------------------------------------------------------
# Tokenizer / text encoders
# ---------------------------------------------------------------------------------------------
VOCAB_SIZE = 1000  # 256 bytes + 256 bytes</w> + first 486 merges + <|startoftext|> + <|endoftext|>
MAX_LEN = 77


def clip_cfg(hidden, intermediate, act, layers=3, heads=4, proj=32):
    return dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=intermediate,
        projection_dim=proj,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_LEN,
        hidden_act=act,
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        # the hub's SD text encoder configs all carry these legacy ids; eos_token_id == 2 makes
        # transformers pool at argmax(input_ids) (= the first <|endoftext|>, the highest id)
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


CLIP_L = clip_cfg(32, 64, "quick_gelu")  # SD 1.5 text encoder, SDXL text_encoder (OpenAI CLIP ViT-L)
CLIP_H = clip_cfg(32, 64, "gelu")  # SD 2.x text encoder (OpenCLIP ViT-H)
CLIP_G = clip_cfg(48, 96, "gelu", layers=2, heads=6)  # SDXL text_encoder_2 (OpenCLIP ViT-bigG, with text_projection);
# depth and heads differ from text_encoder on purpose (as 12 vs 32 layers, 12 vs 20 heads do in SDXL)

# ---------------------------------------------------------------------------------------------
# UNets. Channels (8, 16, 16) keep all five folders near 8 MB (at (32, 64, 64) they would be
# ~60 MB); norm groups 4 so that every GroupNorm still has 2 or 4 channels per group.
# Heads per level are chosen so that reading diffusers' legacy `attention_head_dim` as a head
# *size* instead of a head *count* gives a different split at every level that has attention
# (i.e. heads^2 != channels), and so that levels differ where the real model's do.
# ---------------------------------------------------------------------------------------------
UNET_CH = (8, 16, 16)
UNET_GROUPS = 4

_UNET_COMMON = dict(
    sample_size=IMAGE_SIDE // 8,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    block_out_channels=UNET_CH,
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=UNET_GROUPS,
    norm_eps=1e-5,
)
SD15_UNET = dict(
    _UNET_COMMON,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=CLIP_L["hidden_size"],
    attention_head_dim=8,  # diffusers' legacy name: 8 *heads* at every level (head size C/8 = 1, 2, 2), as SD 1.5
    use_linear_projection=False,
)
SD21_UNET = dict(
    _UNET_COMMON,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=CLIP_H["hidden_size"],
    attention_head_dim=(1, 2, 2),  # legacy name: heads per level, head size 8 throughout (SD 2.x: [5, 10, 20, 20] x 64)
    use_linear_projection=True,
)
XL_CROSS = CLIP_L["hidden_size"] + CLIP_G["hidden_size"]  # concat of both penultimate states
XL_TIME_DIM = 8
SDXL_UNET = dict(
    _UNET_COMMON,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2),  # SDXL: (1, 2, 10)
    attention_head_dim=(2, 2, 8),  # legacy name: heads per level; level 1 has no attention (SDXL: [5, 10, 20])
    use_linear_projection=True,
    cross_attention_dim=XL_CROSS,
    addition_embed_type="text_time",
    addition_time_embed_dim=XL_TIME_DIM,
    projection_class_embeddings_input_dim=CLIP_G["projection_dim"] + 6 * XL_TIME_DIM,
)

# ---------------------------------------------------------------------------------------------
# VAE: SD's 4 levels (latent = image / 8), reduced channels
# ---------------------------------------------------------------------------------------------
def vae_cfg(scaling_factor):
    return dict(
        sample_size=IMAGE_SIDE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=scaling_factor,
    )


# ---------------------------------------------------------------------------------------------
# Schedulers, as in each kind's hub repo (sd15: DDIM instead of the hub's PNDM, see README)
# ---------------------------------------------------------------------------------------------
_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", trained_betas=None)
SCHED = {
    "sd15": (DDIMScheduler, dict(_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                 prediction_type="epsilon", timestep_spacing="leading")),
    "sd21": (DDIMScheduler, dict(_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                 prediction_type="v_prediction", timestep_spacing="leading")),
    "sd_turbo": (EulerDiscreteScheduler, dict(_BETAS, steps_offset=1, prediction_type="epsilon",
                                              interpolation_type="linear", use_karras_sigmas=False,
                                              timestep_spacing="trailing")),
    "sdxl": (EulerDiscreteScheduler, dict(_BETAS, steps_offset=1, prediction_type="epsilon",
                                          interpolation_type="linear", use_karras_sigmas=False,
                                          timestep_spacing="leading")),
    "sdxl_turbo": (EulerAncestralDiscreteScheduler, dict(_BETAS, steps_offset=1, prediction_type="epsilon",
                                                         timestep_spacing="trailing")),
}

KIND_SPEC = {
    # kind: (unet config, text encoder 1 config, vae scaling factor, tokenizer 1 pad, [enc 2 cfg, tok 2 pad])
    "sd15": (SD15_UNET, CLIP_L, 0.18215, "<|endoftext|>", None, None),
    "sd21": (SD21_UNET, CLIP_H, 0.18215, "!", None, None),
    "sd_turbo": (SD21_UNET, CLIP_H, 0.18215, "!", None, None),
    "sdxl": (SDXL_UNET, CLIP_L, 0.13025, "<|endoftext|>", CLIP_G, "!"),
    "sdxl_turbo": (SDXL_UNET, CLIP_L, 0.13025, "<|endoftext|>", CLIP_G, "!"),
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def bytes_to_unicode():
    """OpenAI CLIP / GPT-2 byte <-> unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(bpe_path, vocab_size):
    """CLIP's vocab built as openai/CLIP's simple_tokenizer does, truncated to vocab_size."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    n_merges = vocab_size - 512 - 2
    merges = [tuple(m.split()) for m in lines[1 : 1 + n_merges]]
    assert len(merges) == n_merges and all(len(m) == 2 for m in merges), "unexpected BPE file"
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == vocab_size and len(set(vocab)) == vocab_size
    return {t: i for i, t in enumerate(vocab)}, merges


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def seeded_randn(shape, tag):
    """Deterministic N(0,1) tensor; its seed is SEED + crc32(tag) so every golden has its own."""
    g = torch.Generator().manual_seed(SEED + zlib.crc32(tag.encode()) % 1_000_000)
    return torch.randn(*shape, generator=g, dtype=torch.float32)


@torch.no_grad()
def reshape_init(model, seed):
    """Make random init less degenerate: query/key weights x QK_SCALE, constant parameters jittered."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 2)
        if name.endswith(".weight") and len(leaf) >= 2 and leaf[-2] in ("to_q", "to_k", "q_proj", "k_proj"):
            p.mul_(QK_SCALE)
        flat = p.detach().reshape(-1)
        if flat.numel() > 1 and bool((flat == flat[0]).all()):
            p.add_(CONST_NOISE * torch.randn(p.shape, generator=g, dtype=p.dtype))


def make_tokenizer(vocab, merges, pad):
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LEN, pad_token=pad)


def write_slow_tokenizer_files(tok_dir, vocab, merges, pad):
    """The hub's SD repos ship vocab.json + merges.txt + special_tokens_map.json; transformers 5
    writes only tokenizer.json + tokenizer_config.json. Add the former (tokenizer.json stays)."""
    with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")

    def special(content):
        return dict(content=content, lstrip=False, normalized=True, rstrip=False, single_word=False)

    stm = dict(
        bos_token=special("<|startoftext|>"),
        eos_token=special("<|endoftext|>"),
        pad_token=special(pad) if pad == "<|endoftext|>" else pad,
        unk_token=special("<|endoftext|>"),
    )
    with open(os.path.join(tok_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(stm, f, indent=2, ensure_ascii=False)
        f.write("\n")


def prefix_text_model_keys(te_dir, cls, module):
    """transformers 5 saves CLIPTextModel keys flat ("embeddings...", "encoder.layers..."); the hub's
    SD checkpoints (and easel's loader) use "text_model.<key>". Rewrite in the hub layout and check
    that transformers still loads the file bit-exactly. (CLIPTextModelWithProjection already saves
    "text_model.*" + "text_projection.weight".)"""
    path = os.path.join(te_dir, "model.safetensors")
    sd = load_file(path)
    if not all(k.startswith("text_model.") or k == "text_projection.weight" for k in sd):
        sd = {(k if k.startswith("text_model.") or k == "text_projection.weight" else "text_model." + k): v.contiguous()
              for k, v in sd.items()}
        save_file(sd, path, metadata={"format": "pt"})
    back, info = cls.from_pretrained(te_dir, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    ref, got = module.state_dict(), back.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), "text encoder round trip differs"


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
def build(kind, out, vocab, merges):
    ki = KINDS.index(kind)
    base = SEED + 100 * ki  # every kind gets its own weights; component k is seeded base + k
    unet_cfg, te_cfg, vae_sf, pad1, te2_cfg, pad2 = KIND_SPEC[kind]
    xl = kind in XL_KINDS

    torch.manual_seed(base + 0)
    unet = UNet2DConditionModel(**unet_cfg)
    reshape_init(unet, base + 10)
    torch.manual_seed(base + 1)
    vae = AutoencoderKL(**vae_cfg(vae_sf))
    reshape_init(vae, base + 11)
    torch.manual_seed(base + 2)
    te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    reshape_init(te, base + 12)
    te2 = None
    if xl:
        torch.manual_seed(base + 3)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**te2_cfg))
        reshape_init(te2, base + 13)
    for m in (unet, vae, te, te2):
        if m is not None:
            m.to(torch.float32).eval()

    cls, scfg = SCHED[kind]
    scheduler = cls(**scfg)
    tok = make_tokenizer(vocab, merges, pad1)
    if xl:
        tok2 = make_tokenizer(vocab, merges, pad2)
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
            unet=unet, scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    if os.path.isdir(out):
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    prefix_text_model_keys(os.path.join(out, "text_encoder"), CLIPTextModel, te)
    write_slow_tokenizer_files(os.path.join(out, "tokenizer"), vocab, merges, pad1)
    if xl:
        prefix_text_model_keys(os.path.join(out, "text_encoder_2"), CLIPTextModelWithProjection, te2)
        write_slow_tokenizer_files(os.path.join(out, "tokenizer_2"), vocab, merges, pad2)


def load(kind, out):
    cls = StableDiffusionXLPipeline if kind in XL_KINDS else StableDiffusionPipeline
    pipe = cls.from_pretrained(out, dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_tokenizer_without_json(tok_dir, ref_tok):
    """The slow files alone (vocab.json + merges.txt, no tokenizer.json) must tokenize identically."""
    with tempfile.TemporaryDirectory() as d:
        for fn in os.listdir(tok_dir):
            if fn != "tokenizer.json":
                shutil.copy(os.path.join(tok_dir, fn), d)
        t = CLIPTokenizer.from_pretrained(d)
        for p in (PROMPT, NEGATIVE):
            a = t(p, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
            b = ref_tok(p, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
            assert a == b, (tok_dir, a, b)
        assert t.pad_token == ref_tok.pad_token


# ---------------------------------------------------------------------------------------------
# goldens
# ---------------------------------------------------------------------------------------------
class Goldens:
    def __init__(self):
        self.t = {}
        self.desc = {}
        self.fp64 = {}

    def add(self, name, tensor, desc, ref64=None):
        assert name not in self.t, name
        tensor = tensor.detach().clone().contiguous()
        if tensor.dtype not in (torch.int64,):
            tensor = tensor.to(torch.float32)
            assert torch.isfinite(tensor).all(), name
        self.t[name] = tensor
        self.desc[name] = desc
        if ref64 is not None:
            self.fp64[name] = float((tensor.double() - ref64.detach().double()).abs().max())


def encode(te, ids):
    o = te(ids, output_hidden_states=True)
    pooled = o.text_embeds if isinstance(te, CLIPTextModelWithProjection) else o.pooler_output
    return o.last_hidden_state, o.hidden_states[-2], pooled


def unet_call(unet, x, t, ctx, added):
    kw = {}
    if added is not None:
        kw["added_cond_kwargs"] = added
    return unet(x, t, encoder_hidden_states=ctx, **kw).sample


@torch.no_grad()
def compute_goldens(kind, pipe):
    G = Goldens()
    xl = kind in XL_KINDS

    # --- tokens and text encoders ---
    root = pipe.name_or_path
    encs = [("text", "tokens", pipe.tokenizer, pipe.text_encoder, "text_encoder")]
    if xl:
        encs.append(("text2", "tokens2", pipe.tokenizer_2, pipe.text_encoder_2, "text_encoder_2"))
    states = {}
    for E, T, tok, te, sub in encs:
        # the same weights in float64, to measure how far fp32 rounding moves each golden
        te_d = type(te).from_pretrained(os.path.join(root, sub)).double().eval()
        for p, text in (("prompt", PROMPT), ("negative", NEGATIVE)):
            ids = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
            ids = ids.to(torch.int64)
            G.add(f"{T}.{p}", ids, f"{'tokenizer_2' if T == 'tokens2' else 'tokenizer'}({p!r} text, padding=max_length, "
                  "max_length=77, truncation=True).input_ids")
            last, pen, pooled = encode(te, ids)
            r = encode(te_d, ids)
            which = "text_encoder_2" if E == "text2" else "text_encoder"
            G.add(f"{E}.{p}.last", last, f"{which} last_hidden_state (after final_layer_norm) of the {p}", r[0])
            G.add(f"{E}.{p}.penultimate", pen, f"{which} hidden_states[-2] (output_hidden_states=True) of the {p}", r[1])
            pname = "text_embeds (pooled, through text_projection)" if E == "text2" else "pooler_output (final-LN state at the first <|endoftext|>)"
            G.add(f"{E}.{p}.pooled", pooled, f"{which} {pname} of the {p}", r[2])
            states[(E, p)] = (last, pen, pooled, r)

    # --- UNet inputs exactly as the pipeline builds them ---
    if xl:
        ctx = torch.cat([
            torch.cat([states[("text", p)][1], states[("text2", p)][1]], dim=-1) for p in ("negative", "prompt")
        ])
        ctx64 = torch.cat([
            torch.cat([states[("text", p)][3][1], states[("text2", p)][3][1]], dim=-1) for p in ("negative", "prompt")
        ])
        pe, npe, pooled, npooled = pipe.encode_prompt(
            prompt=PROMPT, device=torch.device("cpu"), num_images_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=NEGATIVE,
        )
        assert torch.equal(pe, ctx[1:2]) and torch.equal(npe, ctx[0:1]), "SDXL context != encode_prompt"
        text_embeds = torch.cat([states[("text2", "negative")][2], states[("text2", "prompt")][2]])
        text_embeds64 = torch.cat([states[("text2", "negative")][3][2], states[("text2", "prompt")][3][2]])
        assert torch.equal(pooled, text_embeds[1:2]) and torch.equal(npooled, text_embeds[0:1]), "pooled != encode_prompt"
        time_ids = torch.tensor([[IMAGE_SIDE, IMAGE_SIDE, 0, 0, IMAGE_SIDE, IMAGE_SIDE]] * 2, dtype=torch.float32)
        # the pipeline's own add_time_ids
        ati = pipe._get_add_time_ids((IMAGE_SIDE, IMAGE_SIDE), (0, 0), (IMAGE_SIDE, IMAGE_SIDE), dtype=torch.float32,
                                     text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
        assert torch.equal(ati, time_ids[0:1]), ati
    else:
        ctx = torch.cat([states[("text", p)][0] for p in ("negative", "prompt")])
        ctx64 = torch.cat([states[("text", p)][3][0] for p in ("negative", "prompt")])
        pe, npe = pipe.encode_prompt(PROMPT, torch.device("cpu"), 1, True, negative_prompt=NEGATIVE)
        assert torch.equal(pe, ctx[1:2]) and torch.equal(npe, ctx[0:1]), "context != encode_prompt"

    latents = seeded_randn((1, 4, IMAGE_SIDE // 8, IMAGE_SIDE // 8), f"{kind}/unet.latents")
    G.add("unet.latents", latents, "UNet input sample (seeded randn)")
    G.add("unet.context", ctx, "encoder_hidden_states, rows (negative, prompt) as encode_prompt returns them"
          + (": concat(text.*.penultimate, text2.*.penultimate) on the last dim" if xl else ": text.*.last"))
    if xl:
        G.add("unet.text_embeds", text_embeds, "added_cond_kwargs text_embeds, rows (negative, prompt) = text2.*.pooled")
        G.add("unet.time_ids", time_ids, "added_cond_kwargs time_ids, both rows (orig h, orig w, crop top, crop left, target h, target w)")
    G.add("unet.guidance", torch.tensor([GUIDANCE]), "classifier-free guidance scale g")

    unet64 = UNet2DConditionModel.from_pretrained(os.path.join(root, "unet")).double().eval()
    x2 = torch.cat([latents, latents])
    for i, tv in enumerate(TIMESTEPS):
        t = torch.tensor([tv], dtype=torch.float32)
        G.add(f"unet.t{i}.timestep", t, f"timestep {i} (float32)")
        a1 = {"text_embeds": text_embeds[1:2], "time_ids": time_ids[1:2]} if xl else None
        a2 = {"text_embeds": text_embeds, "time_ids": time_ids} if xl else None
        a1d = {"text_embeds": text_embeds64[1:2], "time_ids": time_ids[1:2].double()} if xl else None
        a2d = {"text_embeds": text_embeds64, "time_ids": time_ids.double()} if xl else None
        single = unet_call(pipe.unet, latents, t, ctx[1:2], a1)
        single64 = unet_call(unet64, latents.double(), t.double(), ctx64[1:2], a1d)
        G.add(f"unet.t{i}.single", single, f"unet(latents, t{i}, context[1:2]{', added cond row 1' if xl else ''}).sample", single64)
        batch = unet_call(pipe.unet, x2, t, ctx, a2)
        batch64 = unet_call(unet64, x2.double(), t.double(), ctx64, a2d)
        G.add(f"unet.t{i}.batch", batch, f"unet(cat([latents, latents]), t{i}, context{', added cond' if xl else ''}).sample (rows negative, prompt)", batch64)
        u, c = batch.chunk(2)
        u64, c64 = batch64.chunk(2)
        G.add(f"unet.t{i}.cfg", u + GUIDANCE * (c - u), "uncond + g * (cond - uncond) from unet.t{i}.batch".replace("{i}", str(i)),
              u64 + GUIDANCE * (c64 - u64))

    # --- VAE ---
    vae64 = AutoencoderKL.from_pretrained(os.path.join(root, "vae")).double().eval()
    vl = seeded_randn((1, 4, IMAGE_SIDE // 8, IMAGE_SIDE // 8), f"{kind}/vae.latents")
    G.add("vae.latents", vl, "vae.decode input (already divided by scaling_factor; seeded randn)")
    G.add("vae.image", pipe.vae.decode(vl).sample, "vae.decode(vae.latents).sample, raw (no clamp, range about [-1, 1])",
          vae64.decode(vl.double()).sample)

    # --- schedulers ---
    sched_info = {}
    names = [("own", type(pipe.scheduler))]
    if kind == "sd15":
        names += [("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler), ("euler_a", EulerAncestralDiscreteScheduler)]
    for name, cls in names:
        sched_info[name] = run_scheduler(G, kind, name, cls, pipe.scheduler.config)
    return G, sched_info


def run_scheduler(G, kind, name, cls, config):
    s = cls.from_config(config)
    s.set_timesteps(SCHED_STEPS)
    mod = sys.modules[cls.__module__]
    P = f"sched.{name}"
    G.add(f"{P}.timesteps", s.timesteps.to(torch.float32), f"{cls.__name__}.timesteps after set_timesteps({SCHED_STEPS})")
    if hasattr(s, "sigmas") and cls is not DDIMScheduler:
        G.add(f"{P}.sigmas", s.sigmas.to(torch.float32), f"{cls.__name__}.sigmas after set_timesteps({SCHED_STEPS}) (last = 0)")
    init_sigma = float(s.init_noise_sigma)
    sample = seeded_randn((1, 4, 8, 8), f"{kind}/{P}.init") * s.init_noise_sigma
    G.add(f"{P}.init", sample, f"seeded randn * init_noise_sigma ({init_sigma:.9g}): the sample before step 0")
    noise_used = []
    orig = getattr(mod, "randn_tensor", None)
    for k, t in enumerate(s.timesteps):
        mi = s.scale_model_input(sample, t)
        G.add(f"{P}.model_input.{k}", mi, f"scale_model_input(sample, timesteps[{k}])")
        mo = seeded_randn((1, 4, 8, 8), f"{kind}/{P}.model_output.{k}")
        G.add(f"{P}.model_output.{k}", mo, "seeded randn standing in for the UNet output at step {k}".replace("{k}", str(k)))
        noise = seeded_randn((1, 4, 8, 8), f"{kind}/{P}.noise.{k}")
        G.add(f"{P}.noise.{k}", noise, f"noise handed to step {k} (used only by ancestral / eta>0 steps)")

        def fake_randn(shape, *a, _n=noise, **kw):
            assert tuple(shape) == tuple(_n.shape), shape
            noise_used.append(k)
            return _n.clone().to(kw.get("dtype") or _n.dtype)

        if orig is not None:
            mod.randn_tensor = fake_randn
        try:
            out = s.step(mo, t, sample, return_dict=True)
        finally:
            if orig is not None:
                mod.randn_tensor = orig
        sample = out.prev_sample
        G.add(f"{P}.sample.{k}", sample, f"prev_sample after step {k}")
        po = getattr(out, "pred_original_sample", None)
        if po is not None:
            G.add(f"{P}.pred_original.{k}", po, f"pred_original_sample of step {k}")
    ancestral = cls is EulerAncestralDiscreteScheduler
    assert noise_used == (list(range(SCHED_STEPS)) if ancestral else []), (name, noise_used)
    cfg = {k: v for k, v in dict(s.config).items() if not k.startswith("_")}
    return dict(
        class_name=cls.__name__,
        built_from="scheduler/scheduler_config.json" + ("" if name == "own" else f" via {cls.__name__}.from_config"),
        config=json_safe(cfg),
        init_noise_sigma=init_sigma,
        timesteps=[float(x) for x in s.timesteps],
        noise_used_by_step=ancestral,
    )


def json_safe(v):
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def config_facts(kind, out):
    def rd(p):
        with open(os.path.join(out, p)) as f:
            return json.load(f)

    u = rd("unet/config.json")
    v = rd("vae/config.json")
    facts = dict(
        unet={k: u.get(k) for k in (
            "block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "attention_head_dim",
            "num_attention_heads", "transformer_layers_per_block", "use_linear_projection", "cross_attention_dim",
            "norm_num_groups", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
            "sample_size", "upcast_attention")},
        vae={k: v.get(k) for k in ("block_out_channels", "layers_per_block", "norm_num_groups", "latent_channels", "scaling_factor", "sample_size")},
    )
    facts["unet"]["heads_per_level"] = (
        [u["attention_head_dim"]] * len(u["block_out_channels"]) if isinstance(u["attention_head_dim"], int) else u["attention_head_dim"]
    )
    facts["unet"]["head_size_per_level"] = [c // h for c, h in zip(u["block_out_channels"], facts["unet"]["heads_per_level"])]
    for te, tk in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if not os.path.isdir(os.path.join(out, te)):
            continue
        c = rd(f"{te}/config.json")
        t = rd(f"{tk}/tokenizer_config.json")
        facts[te] = {k: c.get(k) for k in (
            "architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "hidden_act", "projection_dim", "vocab_size", "max_position_embeddings", "eos_token_id")}
        facts[tk] = {"pad_token": t.get("pad_token"), "model_max_length": t.get("model_max_length"),
                     "tokenizer_class": t.get("tokenizer_class")}
    return facts


def write_goldens(kind, out, G, sched_info):
    names = sorted(G.t)
    save_file({n: G.t[n] for n in names}, os.path.join(out, "golden.safetensors"), metadata={"kind": kind})
    groups = {}
    for n in names:
        if G.t[n].dtype == torch.int64:
            continue
        g = ".".join(x for x in n.split(".") if not (x.isdigit() or x in ("prompt", "negative", "t0", "t1")))
        groups[g] = max(groups.get(g, 0.0), float(G.t[n].abs().max()))
    files = {}
    for root, _, fns in os.walk(out):
        for fn in sorted(fns):
            p = os.path.join(root, fn)
            rel = os.path.relpath(p, out)
            if rel != "golden.json":
                files[rel] = {"bytes": os.path.getsize(p), "sha256": sha256(p)}
    doc = dict(
        kind=kind,
        generator="scripts/parity/make_parity.py",
        versions=dict(torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__,
                      safetensors=__import__("safetensors").__version__, numpy=np.__version__),
        computed="torch float32 on CPU, 1 thread, from the pipeline reloaded from this folder with from_pretrained",
        seed=SEED,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        guidance=GUIDANCE,
        unet_timesteps=list(TIMESTEPS),
        image_size=[IMAGE_SIDE, IMAGE_SIDE],
        scheduler_steps=SCHED_STEPS,
        schedulers=sched_info,
        structure=config_facts(kind, out),
        tolerance_note=(
            "fp64_max_abs_diff = max |golden(fp32) - same computation in float64| (text encoders, UNet, VAE). "
            "A correct fp32 implementation with another summation order lands within a few times that; "
            "suggested checks: max_abs_diff <= 1e-4 * max(1, max_abs) for text/unet/vae and <= 1e-5 * max(1, max_abs) "
            "for tokens (exact) and scheduler tensors (elementwise maths only)."
        ),
        max_abs_by_group=groups,
        tensors={
            n: dict(
                dtype=str(G.t[n].dtype).replace("torch.", ""),
                shape=list(G.t[n].shape),
                max_abs=float(G.t[n].abs().max()) if G.t[n].dtype != torch.int64 else None,
                fp64_max_abs_diff=G.fp64.get(n),
                description=G.desc[n],
            )
            for n in names
        },
        files=files,
    )
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    return groups


@torch.no_grad()
def pipeline_smoke(kind, pipe):
    kw = dict(prompt=PROMPT, num_inference_steps=2, height=IMAGE_SIDE, width=IMAGE_SIDE, output_type="np",
              generator=torch.Generator().manual_seed(SEED))
    if kind in ("sd_turbo", "sdxl_turbo"):
        kw["guidance_scale"] = 0.0
    img = pipe(**kw).images
    assert img.shape == (1, IMAGE_SIDE, IMAGE_SIDE, 3) and np.isfinite(img).all(), img.shape
    return float(img.min()), float(img.max()), float(img.std())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "parity")))
    ap.add_argument("--bpe", required=True, help="CLIP's bpe_simple_vocab_16e6.txt.gz (from the open-clip-torch 3.3.0 wheel)")
    ap.add_argument("--only", action="append", choices=KINDS)
    ap.add_argument("--check", action="store_true", help="also run a 2-step 64x64 pipeline call per kind")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    vocab, merges = clip_vocab_and_merges(a.bpe, VOCAB_SIZE)
    for kind in a.only or KINDS:
        out = os.path.join(a.out, kind)
        build(kind, out, vocab, merges)
        pipe = load(kind, out)
        check_tokenizer_without_json(os.path.join(out, "tokenizer"), pipe.tokenizer)
        if kind in XL_KINDS:
            check_tokenizer_without_json(os.path.join(out, "tokenizer_2"), pipe.tokenizer_2)
        G, sched_info = compute_goldens(kind, pipe)
        groups = write_goldens(kind, out, G, sched_info)
        for root, _, fns in os.walk(out):  # safetensors writes 0600; make the fixtures plain 0644
            for fn in fns:
                os.chmod(os.path.join(root, fn), 0o644)
        print(f"{kind}: {len(G.t)} goldens; max |x| by group: " + ", ".join(f"{k} {v:.3g}" for k, v in groups.items()))
        worst = max(G.fp64.items(), key=lambda kv: kv[1])
        print(f"  worst fp32-vs-fp64 deviation: {worst[0]} {worst[1]:.3g}")
        if a.check:
            pipe = load(kind, out)
            print("  2-step pipeline (min, max, std):", pipeline_smoke(kind, pipe))


if __name__ == "__main__":
    main()
