"""Run under `torchrun --nproc_per_node 2`: Ctrl-C reaches rank 1 only, during step 2; both ranks
must stop after the same step, rank 0 saving, each writing what it saw to OUT/rankN.json."""
import gc
import json
import os
import signal
import sys
from pathlib import Path

import torch.distributed as dist

from supernet.data import build_datasets

from supernet.errors import Interrupted

from supernet.train_config import TrainConfig

from supernet.trainer import Trainer

shapes, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(data=shapes, out=str(out), steps=6, batch_size=2, warmup=1, workers=0, log_every=1, ckpt_every=100,
                  eval_images=2, eval_random_archs=0, calib_batches=1, device="cpu", seed=3)
trainer = Trainer(cfg, build_datasets(cfg, 128), resume=(out / "last.pt").is_file())
original = trainer.train_step


def ctrl_c_on_rank_1_at_step_2(images, targets):
    if trainer.step == 2 and dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGINT)
    return original(images, targets)


trainer.train_step = ctrl_c_on_rank_1_at_step_2
try:
    trainer.run()
    seen = {"interrupted": None, "step": trainer.step}
except Interrupted as e:
    seen = {"interrupted": str(e), "step": trainer.step}
(out / f"rank{dist.get_rank()}.json").write_text(json.dumps(seen))
# torn down together, the DDP model (whose reducer holds gloo work) first: a rank that exits while the other still
# saves, with gloo threads alive at interpreter exit, can abort ("terminate called without an active exception")
dist.barrier()
del trainer, original
gc.collect()
dist.destroy_process_group()
