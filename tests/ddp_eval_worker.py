"""Run under `torchrun --nproc_per_node 2`: two DDP training steps whose evaluations are split
across the ranks (each detects its share of the images, rank 0 scores them all); rank 0 writes
the final evaluation to OUT/eval.json."""
import json
import sys
from pathlib import Path

import torch.distributed as dist

from supernet.data import build_datasets
from supernet.train_config import TrainConfig
from supernet.trainer import Trainer

shapes, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig(**json.loads(sys.argv[3]), data=shapes, out=str(out))
trainer = Trainer(cfg, build_datasets(cfg, 128))
result = trainer.run()
if dist.get_rank() == 0:
    (out / "eval.json").write_text(json.dumps(result["eval"]))
else:
    assert result["eval"] == {}, result["eval"]
dist.barrier()
dist.destroy_process_group()
