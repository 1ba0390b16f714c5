#!/usr/bin/env python3
"""PyTorch + diffusers peer of examples/component_bench.rs (run by scripts/bench-engine.sh).

Times, on CPU in fp32 with the same thread count as easel, for one hub-layout model folder:
load (from_pretrained of the pipeline's parts), one UNet call with classifier-free guidance
(batch 2) at SIDE, one VAE decode, and the process's peak memory. Medians after one warm-up.
Prints one `RESULT key=value ...` line in component_bench's format.

Usage: python bench.py FOLDER SIDE [RUNS]
"""
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402


def median_ms(runs, f):
    f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    folder, side = sys.argv[1], int(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    t = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
    load_ms = (time.perf_counter() - t) * 1e3
    prompt = "a photo of a red fox in the snow, highly detailed"
    xl = hasattr(pipe, "text_encoder_2")
    with torch.no_grad():
        added = {}
        if xl:
            ctx, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, negative_prompt="", do_classifier_free_guidance=True)
            ids = torch.tensor([[side, side, 0, 0, side, side]] * 2, dtype=torch.float32)
            added = {"text_embeds": torch.cat([neg_pooled, pooled]), "time_ids": ids}
        else:
            ctx, neg = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt="")
        context = torch.cat([neg, ctx])
        latents = torch.randn(2, 4, side // 8, side // 8)
        unet_ms = median_ms(runs, lambda: pipe.unet(latents, 500, encoder_hidden_states=context, added_cond_kwargs=added or None))
        vae_ms = median_ms(runs, lambda: pipe.vae.decode(latents[:1]))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"RESULT side={side} load_ms={load_ms:.0f} unet_cfg_ms={unet_ms:.0f} vae_decode_ms={vae_ms:.0f} peak_mib={peak_mib}")


if __name__ == "__main__":
    main()
