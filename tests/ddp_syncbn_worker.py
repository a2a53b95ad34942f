"""Run under `torchrun --nproc_per_node 2`: a SyncBatchNorm2d at a slice of its channels, each rank
on half of one batch; rank 0 writes what both saw (outputs, gradients, running statistics) to
OUT.pt for the test to set against a single BatchNorm2d on the whole batch."""
import sys

import torch
import torch.distributed as dist

from supernet.layers import BatchNorm2d, sync_batchnorm

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
batch = torch.randn(4, 16, 5, 5, generator=g) * 3 + 1
upstream = torch.randn(4, 12, 5, 5, generator=g)
bn = torch.nn.Sequential(BatchNorm2d(16))
with torch.no_grad():
    bn[0].weight.uniform_(0.5, 1.5, generator=g)
    bn[0].bias.uniform_(-1, 1, generator=g)
bn = sync_batchnorm(bn).train()
share = batch[2 * rank: 2 * rank + 2, :12].clone().requires_grad_()
out = bn(share)
(out * upstream[2 * rank: 2 * rank + 2]).sum().backward()
grads = {n: p.grad.clone() for n, p in bn.named_parameters()}
for gr in grads.values():
    dist.all_reduce(gr)  # as DDP sums (then averages) the ranks' gradients
pieces = [torch.zeros_like(out) for _ in range(world)]
dist.all_gather(pieces, out.detach())
input_grads = [torch.zeros_like(share) for _ in range(world)]
dist.all_gather(input_grads, share.grad)
if rank == 0:
    torch.save({"batch": batch, "upstream": upstream, "out": torch.cat(pieces), "input_grad": torch.cat(input_grads),
                "grads": grads, "state": bn[0].state_dict(), "type": type(bn[0]).__name__}, sys.argv[1])
dist.barrier()  # no rank tears gloo down while another still talks to it
dist.destroy_process_group()
