"""Run under `torchrun --nproc_per_node 2`: a few DDP training steps on CPU (gloo), then check that
both ranks hold identical weights and that nothing off the trained paths moved."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from supernet.data import build_datasets
from supernet.layers import leading_slice
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

shapes, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(data=shapes, out=str(out), steps=4, batch_size=2, lr=0.05, warmup=1, workers=0, log_every=1,
                  ckpt_every=100, eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu", seed=3,
                  weight_decay=0.1)
trainer = Trainer(cfg, build_datasets(cfg, 128))
initial = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
trainer.run()
flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
untouched = True
shapes_per_step = [trainer.model.path_shapes(a) for s in range(cfg.steps) for a in trainer.sampler.paths(s)]
for name, p in trainer.model.named_parameters():
    mask = torch.zeros(p.shape, dtype=torch.bool)
    for s in shapes_per_step:
        if name in s:
            mask[leading_slice(s[name])] = True
    untouched &= bool(torch.equal(p.detach()[~mask], initial[name][~mask]))
if dist.get_rank() == 0:
    (out / "ranks.json").write_text(json.dumps({
        "world": dist.get_world_size(), "identical": all(torch.equal(gathered[0], g) for g in gathered[1:]),
        "steps": trainer.step, "off_path_untouched": untouched,
    }))
dist.barrier()  # no rank tears gloo down while another still talks to it
dist.destroy_process_group()
